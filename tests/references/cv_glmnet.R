# cv.glmnet references on the Visium design (visium_design.csv) with fixed fold ids
# (visium_foldid.csv) and a fixed 25-value lambda sequence.
# Output: cv_glmnet.json
# Run   : cd tests/references && Rscript cv_glmnet.R
#
# Cases: family in {poisson, gaussian} x alpha in {0.5, 1}: plain cv.glmnet() calls.
# Extra case "gaussian_mapped" (alpha=0.5): the same CV but every fold fit is made to
# solve the stglm objective at (lambda, alpha) by calling glmnet with fold-specific
# glmnet_alpha = alpha/(alpha+(1-alpha)*ys_k), glmnet_lambda = lambda*(alpha+(1-alpha)*ys_k),
# ys_k = sqrt(mean((y_train_k - mean(y_train_k))^2)) (see glmnet_fits.R / README).
# cvm/cvsd for it are computed with glmnet's own internals (cv.elnet -> cvstats).
# For plain cv.glmnet with gaussian & alpha=0.5 the fold fits solve J with fold-specific
# effective parameters (lambda_eff_k, alpha_eff_k) -- they are recorded per fold.
source("json_util.R")
suppressPackageStartupMessages(library(glmnet))
glmnet.control(fdev = 0, devmax = 1)   # never truncate a lambda path

THRESH <- 1e-26   # 1e-14 only reaches KKT ~1e-6 on this design; see README
MAXIT <- 1e7
NLAM <- 25
RATIO <- 1e-3

d <- read.csv("visium_design.csv")
X <- as.matrix(d[, grep("^lag_", names(d))])
y <- as.numeric(d$y)
fo <- read.csv("visium_foldid.csv")
stopifnot(identical(fo$spot, d$spot))
foldid <- fo$foldid
n <- nrow(X); K <- max(foldid)

lam_seq <- function(alpha) {
  lmax <- max(abs(crossprod(X, y - mean(y)))) / (n * alpha)
  exp(seq(log(lmax), log(RATIO * lmax), length.out = NLAM))
}

kkt <- function(Xt, yt, a0, b, family, lambda, alpha) {
  z <- a0 + drop(Xt %*% b); mu <- if (family == "poisson") exp(z) else z
  r <- yt - mu
  g <- -drop(crossprod(Xt, r)) / nrow(Xt) + lambda * (1 - alpha) * b
  v <- ifelse(b != 0, abs(g + lambda * alpha * sign(b)), pmax(0, abs(g) - lambda * alpha))
  max(abs(mean(r)), v)
}

# per-fold refits (identical to what cv.glmnet does internally unless mapped=TRUE)
fold_fits <- function(family, alpha, lams, mapped) {
  a0 <- matrix(NA, K, NLAM); B <- array(NA, c(K, NLAM, ncol(X)))
  lam_eff <- matrix(NA, K, NLAM); alpha_eff <- rep(NA, K); ysk <- rep(NA, K)
  kk <- matrix(NA, K, NLAM)
  predmat <- matrix(NA, n, NLAM)
  for (k in seq_len(K)) {
    tr <- foldid != k
    yt <- y[tr]; Xt <- X[tr, , drop = FALSE]
    ys <- sqrt(mean((yt - mean(yt))^2)); ysk[k] <- ys
    if (family == "gaussian" && mapped) {
      c_ <- alpha + (1 - alpha) * ys
      fit <- glmnet(Xt, yt, family = family, alpha = alpha / c_, lambda = lams * c_,
                    standardize = FALSE, thresh = THRESH, maxit = MAXIT)
      le <- lams; ae <- alpha
    } else {
      fit <- glmnet(Xt, yt, family = family, alpha = alpha, lambda = lams,
                    standardize = FALSE, thresh = THRESH, maxit = MAXIT)
      if (family == "gaussian") {
        le <- lams * (alpha + (1 - alpha) / ys); ae <- alpha / (alpha + (1 - alpha) / ys)
      } else { le <- lams; ae <- alpha }
    }
    stopifnot(fit$jerr == 0, length(fit$lambda) == NLAM)
    a0[k, ] <- fit$a0; B[k, , ] <- t(as.matrix(fit$beta))
    lam_eff[k, ] <- le; alpha_eff[k] <- ae
    for (l in seq_len(NLAM)) kk[k, l] <- kkt(Xt, yt, a0[k, l], B[k, l, ], family, le[l], ae)
    predmat[!tr, ] <- predict(fit, X[!tr, , drop = FALSE])   # link scale, like cv.glmnet
  }
  list(a0 = a0, B = B, lam_eff = lam_eff, alpha_eff = alpha_eff, ys = ysk, kkt = kk,
       predmat = predmat)
}

response <- function(eta, family) if (family == "poisson") exp(eta) else eta

cases <- list()
for (family in c("poisson", "gaussian")) for (alpha in c(0.5, 1)) {
  for (mapped in c(FALSE, if (family == "gaussian" && alpha < 1) TRUE)) {
    lams <- lam_seq(alpha)
    ff <- fold_fits(family, alpha, lams, mapped)
    if (!mapped) {
      cv <- cv.glmnet(X, y, family = family, alpha = alpha, lambda = lams, foldid = foldid,
                      type.measure = "deviance", standardize = FALSE, thresh = THRESH,
                      maxit = MAXIT, keep = TRUE)
      stopifnot(max(abs(cv$lambda / lams - 1)) < 1e-13)  # gaussian: glmnet returns lambda/ys*ys (rounding)
      predmat <- unname(cv$fit.preval)
      preval_diff <- max(abs(predmat - ff$predmat))   # cv.glmnet vs our fold refits
      cvm <- cv$cvm; cvsd <- cv$cvsd
      imin <- cv$index[1]; i1se <- cv$index[2]
      lmin <- lams[imin]; l1se <- lams[i1se]   # == cv$lambda.min/.1se up to 1e-15 rel.
    } else {
      predmat <- ff$predmat; preval_diff <- NA
      attr(predmat, "family") <- gaussian()
      cvstuff <- glmnet:::cv.elnet(predmat, y, "deviance", rep(1, n), foldid, TRUE)
      st <- glmnet:::cvstats(cvstuff, foldid, K, lams, rep(NA, NLAM), TRUE)
      opt <- glmnet:::getOptcv.glmnet(st$lambda, st$cvm, st$cvsd, "Mean-Squared Error")
      cvm <- st$cvm; cvsd <- st$cvsd; lmin <- opt$lambda.min; l1se <- opt$lambda.1se
      imin <- opt$index[1]; i1se <- opt$index[2]
    }
    mu <- response(predmat, family)
    dev <- if (family == "poisson") {
      2 * (ifelse(y > 0, y * log(y), 0) - y - (y * predmat - exp(predmat)))
    } else (y - predmat)^2
    fold_dev <- t(sapply(seq_len(K), function(k) colMeans(dev[foldid == k, , drop = FALSE])))
    nk <- as.numeric(table(factor(foldid, levels = seq_len(K))))
    cvm_check <- max(abs(colSums(fold_dev * nk) / sum(nk) - cvm))
    name <- if (mapped) "gaussian_mapped" else family
    cases[[length(cases) + 1]] <- list(
      kind = name, family = family, alpha = alpha,
      glmnet_call = if (mapped) "manual fold loop (fold-specific mapped glmnet args) + glmnet:::cvstats"
                    else "cv.glmnet(X, y, family, alpha, lambda, foldid, type.measure='deviance', standardize=FALSE, thresh, maxit, keep=TRUE)",
      lambda = I(lams), cvm = I(unname(cvm)), cvsd = I(unname(cvsd)),
      lambda_min = lmin, lambda_1se = l1se,
      index_min = as.integer(imin), index_1se = as.integer(i1se),   # 1-based
      fold_sizes = I(nk),
      fold_mean_deviance = unname(fold_dev),   # K x nlambda
      cvm_recompute_maxdiff = cvm_check,
      preval_vs_refit_maxdiff = preval_diff,
      fold_a0 = unname(ff$a0),                 # K x nlambda
      fold_beta = lapply(seq_len(K), function(k) unname(ff$B[k, , , drop = TRUE])),  # K of nlambda x p
      fold_train_ys = I(ff$ys),
      fold_lambda_objective = unname(ff$lam_eff),   # K x nlambda: lambda of J each fold fit solves
      fold_alpha_objective = I(ff$alpha_eff),       # K: alpha of J each fold fit solves
      fold_kkt = unname(ff$kkt), fold_kkt_max = max(ff$kkt),
      fit_preval_response_at_min = I(unname(mu[, imin])),
      fit_preval_response_at_1se = I(unname(mu[, i1se])))
    cat(sprintf("%-16s alpha=%.1f lmin=%.5g (idx %d) l1se=%.5g (idx %d) kkt=%.2e cvm_chk=%.1e preval_diff=%s\n",
                name, alpha, lmin, imin, l1se, i1se, max(ff$kkt), cvm_check, format(preval_diff, digits = 3)))
  }
}

out <- list(
  description = paste(
    "cv.glmnet references on visium_design.csv with visium_foldid.csv. lambda: 25 values",
    "log-spaced from lambda_max = max|X'(y-ybar)|/(n*alpha) down to 1e-3*lambda_max.",
    "fold_mean_deviance[k][l] = mean over held-out obs of fold k of the unit deviance",
    "(poisson: 2*(y log y - y - (y*eta - exp(eta))), gaussian: (y - eta)^2);",
    "cvm = weighted mean of fold_mean_deviance over folds with weights fold_sizes;",
    "cvsd = sqrt(sum_k n_k (fold_mean_deviance_k - cvm)^2 / sum_k n_k / (K-1)).",
    "fold_* = fits on the training part of fold k (rows: folds 1..K; fold_beta[k] is nlambda x p).",
    "fit_preval_response_*: held-out predictions on the mean scale at lambda_min/lambda_1se",
    "(cv.glmnet's own fit.preval is on the link scale for poisson)."),
  columns = I(colnames(X)),
  settings = list(nfolds = K, thresh = THRESH, maxit = MAXIT, standardize = FALSE,
                  glmnet_control = list(fdev = 0, devmax = 1), nlambda = NLAM, lambda_min_ratio = RATIO),
  cases = cases,
  sessionInfo = session_info_str())
write_json_file(out, "cv_glmnet.json")
