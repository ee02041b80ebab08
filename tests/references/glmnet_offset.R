# glmnet Poisson fits with an offset, prior weights and penalty factors, on Visium genes.
# Inputs : count_design.csv, count_matrix.csv.gz (make_count_data.py)
# Output : glmnet_offset.json
# Run    : cd tests/references && Rscript glmnet_offset.R
#
# X = section_CP, x_std, y_std, lag_TMEFF2 (4 columns, not standardised), intercept fitted,
# offset = log_total, weights = column `weight` (integers 1..3).
# For each gene, alpha in {1, 0.5} and penalty.factor in {(1,1,1,1), (0,1,1,1)}: ONE glmnet()
# call with the 3 decreasing lambdas  lambda_max1 * (0.5, 0.03, 0.003),  where lambda_max1 is the
# alpha = 1, all-factors-1 lambda_max of J (max_j |sum_i w_i x_ij (y_i - mu0_i)| / sum w, mu0 the
# weighted intercept-and-offset-only fit). The same lambdas are used for every case.
#
# Objective (stglm convention), evaluated here by hand at glmnet's coefficients:
#   J = -sum_i w_i l_i / sum_i w_i + lambda * sum_j f_j [ (1-alpha)/2 b_j^2 + alpha |b_j| ]
#   l_i = y_i z_i - exp(z_i)  (no log y! term),  z_i = a0 + offset_i + x_i' b
# with lambda = glmnet's lambda as passed and f = glmnet's RESCALED penalty factors
# f_raw * p / sum(f_raw) (glmnet rescales them internally; weights are rescaled too, which J's
# division by sum w makes irrelevant).
source("json_util.R")
suppressPackageStartupMessages(library(glmnet))
glmnet.control(fdev = 0, devmax = 1)   # never truncate a lambda path

GENES <- c("LIMS2", "TMEFF2")
PRED <- c("section_CP", "x_std", "y_std", "lag_TMEFF2")
LAMBDA_FRACS <- c(0.5, 0.03, 0.003)
ALPHAS <- c(1, 0.5)
PFS <- list(c(1, 1, 1, 1), c(0, 1, 1, 1))
THRESH <- as.numeric(Sys.getenv("THRESH", "1e-26"))
MAXIT <- 1e7

d <- read.csv("count_design.csv")
cm <- read.csv(gzfile("count_matrix.csv.gz"), check.names = FALSE, row.names = 1)
stopifnot(identical(rownames(cm), d$spot))
X <- as.matrix(d[, PRED]); off <- d$log_total; w <- as.numeric(d$weight)
p <- ncol(X)

objective <- function(y, a0, b, lambda, alpha, f) {
  z <- a0 + off + drop(X %*% b)
  -sum(w * (y * z - exp(z))) / sum(w) + lambda * sum(f * ((1 - alpha) / 2 * b^2 + alpha * abs(b)))
}
kkt <- function(y, a0, b, lambda, alpha, f) {
  mu <- exp(a0 + off + drop(X %*% b))
  r <- w * (y - mu) / sum(w)
  g <- -drop(crossprod(X, r)) + lambda * f * (1 - alpha) * b
  v <- ifelse(b != 0, abs(g + lambda * f * alpha * sign(b)), pmax(0, abs(g) - lambda * f * alpha))
  c(intercept = abs(sum(r)), beta = max(v))
}

fits <- list()
for (gene in GENES) {
  y <- as.numeric(cm[[gene]])
  mu0 <- exp(log(sum(w * y) / sum(w * exp(off))) + off)
  lmax1 <- max(abs(crossprod(X, w * (y - mu0)))) / sum(w)
  lambda <- lmax1 * LAMBDA_FRACS
  for (alpha in ALPHAS) for (pf in PFS) {
    f <- pf * p / sum(pf)
    fit <- glmnet(X, y, family = "poisson", offset = off, weights = w, alpha = alpha,
                  lambda = lambda, penalty.factor = pf, standardize = FALSE, intercept = TRUE,
                  thresh = THRESH, maxit = MAXIT)
    stopifnot(fit$jerr == 0, length(fit$lambda) == length(lambda))
    B <- t(as.matrix(fit$beta)); a0 <- unname(fit$a0)
    J <- vapply(seq_along(lambda), function(k) objective(y, a0[k], B[k, ], lambda[k], alpha, f), 0)
    K <- t(vapply(seq_along(lambda), function(k) kkt(y, a0[k], B[k, ], lambda[k], alpha, f), c(0, 0)))
    fits[[length(fits) + 1]] <- list(
      gene = gene, alpha = alpha, lambda = I(lambda), lambda_max1 = lmax1,
      lambda_fracs = I(LAMBDA_FRACS),
      penalty_factor_raw = I(pf), penalty_factor = I(f),
      a0 = I(a0), beta = unname(B), objective = I(J),
      kkt_intercept = I(unname(K[, 1])), kkt_beta = I(unname(K[, 2])), kkt_max = max(K),
      dev_ratio = I(fit$dev.ratio), nulldev = fit$nulldev, npasses = fit$npasses)
    cat(sprintf("%-7s alpha %.1f pf %s  kkt %.2e  npasses %d  J %s\n", gene, alpha,
                paste(pf, collapse = ""), max(K), fit$npasses, paste(sprintf("%.12g", J), collapse = " ")))
  }
}
out <- list(
  description = paste(
    "glmnet(X, y, family='poisson', offset=log_total, weights=weight, alpha, lambda (3 values,",
    "one call), penalty.factor=penalty_factor_raw, standardize=FALSE, intercept=TRUE, thresh, maxit)",
    "with glmnet.control(fdev=0, devmax=1). objective = J = -sum w (y z - e^z)/sum w +",
    "lambda * sum f [(1-alpha)/2 b^2 + alpha |b|] with lambda as passed to glmnet and",
    "f = penalty_factor = penalty_factor_raw * p / sum(penalty_factor_raw) (glmnet's rescaling).",
    "beta: rows follow lambda, columns follow `columns`."),
  columns = I(PRED), offset = "log_total", weights = "weight",
  weights_sum = sum(w), n = nrow(X),
  settings = list(thresh = THRESH, maxit = MAXIT, standardize = FALSE, intercept = TRUE,
                  glmnet_control = list(fdev = 0, devmax = 1)),
  fits = fits,
  sessionInfo = session_info_str())
write_json_file(out, "glmnet_offset.json")
