# glmnet reference fits (families "poisson" and "gaussian"), alpha in {0, 0.5, 1},
# 4 lambdas fitted as ONE decreasing sequence per (dataset, family, alpha, intercept).
# Inputs : synthetic_data.csv (make_synthetic.py), visium_design.csv (make_visium_design.py)
# Output : glmnet_fits.json
# Run    : cd tests/references && Rscript glmnet_fits.R
#
# Objective (stglm):  J = -(1/n) logL(y, mu) + lambda*[0.5*(1-alpha)*||b||^2 + alpha*||b||_1]
#   poisson : glmnet solves exactly this with (lambda, alpha).
#   gaussian: glmnet internally divides y by ys = sqrt(mean((y - ybar)^2)) (1/n variance;
#             sqrt(mean(y^2)) when intercept=FALSE), fits with lambda/ys and unscales beta.
#             This is equivalent to J with the ridge term divided by ys. So to make glmnet
#             solve J at (lambda, alpha) we CALL it with
#                glmnet_alpha  = alpha / (alpha + (1 - alpha) * ys)
#                glmnet_lambda = lambda * (alpha + (1 - alpha) * ys)
#             (lambda*alpha is unchanged; lambda*(1-alpha) is multiplied by ys).
#             The "gaussian_unmapped" entries store the plain call glmnet(lambda, alpha)
#             for documentation; they solve J at (lambda_eff, alpha_eff) recorded alongside.
source("json_util.R")
suppressPackageStartupMessages(library(glmnet))
# never stop a lambda path early (dev-ratio change / saturation rules)
glmnet.control(fdev = 0, devmax = 1)

LAMBDA_FRACS <- c(0.5, 0.1, 0.02, 0.002)   # times lambda_max1 = max|X'(y-ybar)|/n
ALPHAS <- c(0, 0.5, 1)
THRESH <- as.numeric(Sys.getenv("THRESH", "1e-26"))
MAXIT <- 1e7

load_data <- function(name) {
  if (name == "synthetic") {
    d <- read.csv("synthetic_data.csv")
    X <- as.matrix(d[, grep("^x", names(d))])
  } else {
    d <- read.csv("visium_design.csv")
    X <- as.matrix(d[, grep("^lag_", names(d))])
  }
  list(X = X, y = as.numeric(d$y), colnames = colnames(X))
}

kkt_residual <- function(X, y, a0, beta, family, lambda, alpha, intercept) {
  n <- nrow(X)
  z <- a0 + drop(X %*% beta)
  mu <- if (family == "poisson") exp(z) else z
  r <- y - mu
  g <- -drop(crossprod(X, r)) / n + lambda * (1 - alpha) * beta
  viol <- ifelse(beta != 0, abs(g + lambda * alpha * sign(beta)), pmax(0, abs(g) - lambda * alpha))
  c(intercept = if (intercept) abs(mean(r)) else 0, beta = max(viol))
}

run_case <- function(dname, D, family, alpha, intercept, mapped = TRUE) {
  X <- D$X; y <- D$y; n <- nrow(X)
  lmax1 <- max(abs(crossprod(X, y - mean(y)))) / n
  lambda <- lmax1 * LAMBDA_FRACS
  ys <- if (intercept) sqrt(mean((y - mean(y))^2)) else sqrt(mean(y^2))
  if (family == "gaussian" && mapped) {
    c_ <- alpha + (1 - alpha) * ys
    g_alpha <- alpha / c_; g_lambda <- lambda * c_
    obj_lambda <- lambda; obj_alpha <- rep(alpha, length(lambda))
  } else {
    g_alpha <- alpha; g_lambda <- lambda
    if (family == "gaussian") {  # unmapped: effective objective parameters
      obj_lambda <- lambda * (alpha + (1 - alpha) / ys)
      obj_alpha <- rep(alpha / (alpha + (1 - alpha) / ys), length(lambda))
    } else { obj_lambda <- lambda; obj_alpha <- rep(alpha, length(lambda)) }
  }
  fit <- glmnet(X, y, family = family, alpha = g_alpha, lambda = g_lambda,
                standardize = FALSE, intercept = intercept, thresh = THRESH, maxit = MAXIT)
  stopifnot(fit$jerr == 0, length(fit$lambda) == length(lambda))
  B <- t(as.matrix(fit$beta))            # nlambda x p
  a0 <- unname(fit$a0)
  kkt <- t(sapply(seq_along(lambda), function(k)
    kkt_residual(X, y, a0[k], B[k, ], family, obj_lambda[k], obj_alpha[k], intercept)))
  list(dataset = dname, family = family,
       kind = if (family == "gaussian" && !mapped) "gaussian_unmapped" else family,
       intercept = intercept,
       alpha = obj_alpha[1], lambda = I(obj_lambda),
       glmnet_alpha = g_alpha, glmnet_lambda = I(g_lambda),
       lambda_max1 = lmax1, lambda_fracs = I(LAMBDA_FRACS), y_scale_ys = ys,
       a0 = I(a0), beta = unname(B), dev_ratio = I(fit$dev.ratio), nulldev = fit$nulldev,
       npasses = fit$npasses,
       kkt_intercept = I(unname(kkt[, "intercept"])), kkt_beta = I(unname(kkt[, "beta"])),
       kkt_max = max(kkt))
}

fits <- list()
for (dname in c("synthetic", "visium")) {
  D <- load_data(dname)
  for (family in c("poisson", "gaussian")) for (alpha in ALPHAS) {
    fits[[length(fits) + 1]] <- run_case(dname, D, family, alpha, TRUE)
    if (family == "gaussian" && alpha == 0.5)
      fits[[length(fits) + 1]] <- run_case(dname, D, family, alpha, TRUE, mapped = FALSE)
  }
}
# intercept-free fits
D <- load_data("synthetic")
fits[[length(fits) + 1]] <- run_case("synthetic", D, "poisson", 0.5, FALSE)
D <- load_data("visium")
fits[[length(fits) + 1]] <- run_case("visium", D, "gaussian", 0.5, FALSE)
fits[[length(fits) + 1]] <- run_case("visium", D, "poisson", 1, FALSE)

out <- list(
  description = paste(
    "glmnet fits; each entry: one glmnet() call with a decreasing lambda sequence of 4.",
    "lambda/alpha = parameters of the stglm objective J that the stored (a0, beta) solve;",
    "glmnet_lambda/glmnet_alpha = arguments actually passed to glmnet.",
    "beta is nlambda x p (rows follow lambda). kkt_* = max |(sub)gradient| violation of J,",
    "computed in R. Columns of X: see columns[dataset]."),
  settings = list(standardize = FALSE, thresh = THRESH, maxit = MAXIT,
                  glmnet_control = list(fdev = 0, devmax = 1), lambda_fracs = I(LAMBDA_FRACS)),
  columns = list(synthetic = I(load_data("synthetic")$colnames), visium = I(load_data("visium")$colnames)),
  fits = fits,
  sessionInfo = session_info_str())
write_json_file(out, "glmnet_fits.json")
for (f in fits) cat(sprintf("%-9s %-8s %-17s a=%.2f int=%d kkt=%.2e npass=%d\n",
                            f$dataset, f$family, f$kind, f$alpha, f$intercept, f$kkt_max, f$npasses))
