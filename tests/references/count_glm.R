# Unpenalised count GLMs with a log link and offset log(total counts), on Visium genes.
# Inputs : count_design.csv, count_matrix.csv.gz (make_count_data.py)
# Output : count_glm.json
# Run    : cd tests/references && Rscript count_glm.R
#
# Design (every fit): intercept + section_CP + x_std + y_std + lag_TMEFF2; reduced model for
# the likelihood-ratio tests: intercept + section_CP + lag_TMEFF2 (drops x_std, y_std).
#   poisson : glm(y ~ ... + offset(log_total), family = poisson)
#   gamma   : glm(y + 1 ~ ... + offset(log_total), family = Gamma(link = "log"))
#   negbin  : MASS::glm.nb(y ~ ... + offset(log_total)), theta by ML; then polished by a joint
#             Newton method on (beta, log theta) of the full NB log-likelihood (see README).
# Each family unweighted and with prior weights (count_design.csv column `weight`).
# Plus gamma_total: glm(total ~ section_CP + x_std + y_std + lag_TMEFF2, Gamma(log)), no offset.
source("json_util.R")
suppressPackageStartupMessages(library(MASS))

QUANTILES <- c(0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 0.975, 0.99, 1.0)
PRED <- c("section_CP", "x_std", "y_std", "lag_TMEFF2")
RED <- c("section_CP", "lag_TMEFF2")
ctrl <- glm.control(epsilon = 1e-14, maxit = 1000)

d <- read.csv("count_design.csv")
cm <- read.csv(gzfile("count_matrix.csv.gz"), check.names = FALSE, row.names = 1)
stopifnot(identical(rownames(cm), d$spot))
gmean <- colMeans(cm)
# gene per quantile: mean count closest to quantile(type 7) of all genes' means, first on ties
genes <- vapply(QUANTILES, function(q) names(gmean)[which.min(abs(gmean - quantile(gmean, q)))], "")
stopifnot(!anyDuplicated(genes))
off <- d$log_total
Xf <- cbind("(Intercept)" = 1, as.matrix(d[, PRED]))
Xr <- cbind("(Intercept)" = 1, as.matrix(d[, RED]))
f_full <- as.formula(paste("yy ~", paste(PRED, collapse = " + ")))
f_red <- as.formula(paste("yy ~", paste(RED, collapse = " + ")))

# --- GLM (poisson / gamma), polished as in glm_softplus.R --------------------------------
glm_score <- function(fit, X, y, w) {
  mu <- fitted(fit)
  if (fit$family$family == "poisson") drop(crossprod(X, w * (y - mu)))
  else drop(crossprod(X, w * (y - mu) / mu))            # Gamma, log link
}
fit_glm <- function(formula, X, y, w, fam, offset) {
  dd <- cbind(d, yy = y, ww = w, oo = offset)
  fit <- glm(formula, family = fam, data = dd, weights = ww, offset = oo, control = ctrl)
  stopifnot(fit$converged)
  it0 <- fit$iter
  best <- max(abs(glm_score(fit, X, y, w))); np <- 0
  for (k in 1:50) {
    fit2 <- glm(formula, family = fam, data = dd, weights = ww, offset = oo, control = ctrl,
                start = coef(fit))
    s2 <- max(abs(glm_score(fit2, X, y, w)))
    if (!(s2 < best)) break
    fit <- fit2; best <- s2; np <- k
  }
  # summary()'s covariance comes from the QR of the LAST IRLS iteration, whose weights are
  # those of the iterate before it (rel. ~3e-8 off for TMEFF2 when no restart was accepted).
  # One more single IRLS iteration started at the polished beta puts them at the optimum; it
  # is kept only for summary() (std_err, stat, pvalue, dispersion).
  fit$se_fit <- suppressWarnings(glm(formula, family = fam, data = dd, weights = ww, offset = oo,
                                     start = coef(fit), control = glm.control(epsilon = 1e-14, maxit = 1)))
  fit$iter0 <- it0; fit$npolish <- np; fit$maxscore <- best
  fit
}
glm_record <- function(fit, X, y, w, red) {
  s <- summary(fit$se_fit)
  ct <- s$coefficients
  stopifnot(max(abs(coef(fit$se_fit) - coef(fit))) < 1e-9)
  mu <- fitted(fit); z <- fit$linear.predictors
  gam <- fit$family$family == "Gamma"
  ll_obj <- if (gam) sum(w * (-y / mu - log(mu))) else sum(w * (y * z - exp(z)))
  a_chi <- anova(red, fit$se_fit, test = "Chisq")   # Gamma: dispersion of the full model
  a_f <- anova(red, fit$se_fit, test = "F")
  stopifnot(abs(a_chi$Deviance[2] - (deviance(red) - deviance(fit))) < 1e-8)
  lrt <- list(dropped = I(setdiff(PRED, RED)), df = a_chi$Df[2],
              deviance_diff = a_chi$Deviance[2],
              dispersion_used = if (gam) s$dispersion else 1,
              stat = a_chi$Deviance[2] / (if (gam) s$dispersion else 1),
              pvalue = a_chi[["Pr(>Chi)"]][2],
              reduced_deviance = deviance(red), reduced_df_residual = red$df.residual,
              reduced_max_abs_score = red$maxscore)
  if (gam) { lrt$F <- a_f$F[2]; lrt$F_pvalue <- a_f[["Pr(>F)"]][2] }
  list(coef = I(unname(coef(fit))), coef_names = I(colnames(X)),
       std_err = I(unname(ct[, 2])), stat = I(unname(ct[, 3])), pvalue = I(unname(ct[, 4])),
       stat_kind = if (gam) "t" else "z",
       dispersion = s$dispersion,
       loglik_R = as.numeric(logLik(fit)), loglik_objective = ll_obj,
       deviance = deviance(fit), null_deviance = fit$null.deviance,
       df_residual = fit$df.residual, df_null = fit$df.null, aic = AIC(fit),
       iter_initial_fit = fit$iter0, n_polish_restarts = fit$npolish,
       max_abs_score = fit$maxscore, lrt = lrt)
}
one_glm <- function(y, w, fam, offset) {
  full <- fit_glm(f_full, Xf, y, w, fam, offset)
  red <- fit_glm(f_red, Xr, y, w, fam, offset)
  glm_record(full, Xf, y, w, red)
}

# --- negative binomial ----------------------------------------------------------------------
nb_ll <- function(y, mu, th, w)   # = glm.nb's loglik (its twologlik / 2)
  sum(w * (lgamma(th + y) - lgamma(th) - lgamma(y + 1) + th * log(th) +
           y * log(mu + (y == 0)) - (th + y) * log(th + mu)))
nb_grad_hess <- function(X, y, off, w, b, th) {   # in (beta, t = log theta)
  mu <- exp(drop(X %*% b) + off)
  s_eta <- w * th * (y - mu) / (th + mu)
  h_eta <- w * th * mu * (y + th) / (th + mu)^2          # minus d2 l / d eta2
  s_th <- sum(w * (digamma(y + th) - digamma(th) + log(th) + 1 - log(th + mu) - (y + th) / (th + mu)))
  h_thth <- sum(w * (trigamma(y + th) - trigamma(th) + 1 / th - 2 / (th + mu) + (y + th) / (th + mu)^2))
  h_theta <- w * (y - mu) * mu / (th + mu)^2             # d2 l / d eta d theta
  g <- c(drop(crossprod(X, s_eta)), th * s_th)
  H <- rbind(cbind(-crossprod(X, h_eta * X), th * drop(crossprod(X, h_theta))),
             c(th * drop(crossprod(X, h_theta)), th^2 * h_thth + th * s_th))
  list(g = g, H = H, score_beta = drop(crossprod(X, s_eta)), score_theta = s_th)
}
nb_polish <- function(X, y, off, w, b, th) {
  cur <- nb_grad_hess(X, y, off, w, b, th)
  best <- max(abs(c(cur$score_beta, cur$score_theta))); k <- 0
  for (it in 1:100) {
    step <- -solve(cur$H, cur$g)
    b2 <- b + step[seq_along(b)]; th2 <- th * exp(step[length(step)])
    nxt <- nb_grad_hess(X, y, off, w, b2, th2)
    s2 <- max(abs(c(nxt$score_beta, nxt$score_theta)))
    if (!(s2 < best)) break
    b <- b2; th <- th2; cur <- nxt; best <- s2; k <- it
  }
  list(b = b, th = th, n_newton = k, max_abs_score = best,
       max_abs_score_beta = max(abs(cur$score_beta)), abs_score_theta = abs(cur$score_theta))
}
fit_nb <- function(formula, X, y, w) {
  dd <- cbind(d, yy = y, ww = w)
  form <- update(formula, . ~ . + offset(log_total))
  warns <- character(0)
  nb <- withCallingHandlers(glm.nb(form, data = dd, weights = ww, control = ctrl),
                            warning = function(wn) { warns <<- c(warns, conditionMessage(wn))
                                                     invokeRestart("muffleWarning") })
  pol <- nb_polish(X, y, d$log_total, w, unname(coef(nb)), nb$theta)
  # fixed-theta glm at the polished theta, started at the polished beta: summary() of it with
  # dispersion 1 is what summary.negbin reports (MASS: beta's block given theta)
  g <- glm(form, data = dd, weights = ww, family = negative.binomial(pol$th), control = ctrl,
           start = pol$b)
  list(nb = nb, pol = pol, g = g, warns = unique(warns))
}
nb_record <- function(F, R, X, y, w) {
  nb <- F$nb; pol <- F$pol; g <- F$g
  s <- summary(g, dispersion = 1)
  ct <- s$coefficients
  mu <- exp(drop(X %*% pol$b) + d$log_total)
  th <- pol$th
  info_th <- sum(w * (-trigamma(th + y) + trigamma(th) - 1 / th + 2 / (mu + th) - (y + th) / (mu + th)^2))
  a <- anova(R$nb, nb)           # MASS anova.negbin: theta re-estimated under each model
  tl_full <- 2 * nb_ll(y, mu, th, w)
  mu_r <- exp(drop(Xr %*% R$pol$b) + d$log_total)
  tl_red <- 2 * nb_ll(y, mu_r, R$pol$th, w)
  list(coef = I(pol$b), coef_names = I(colnames(X)), theta = th, theta_se = 1 / sqrt(info_th),
       std_err = I(unname(ct[, 2])), stat = I(unname(ct[, 3])), pvalue = I(unname(ct[, 4])),
       stat_kind = "z", dispersion = 1,
       twologlik = tl_full, loglik = tl_full / 2,
       deviance = deviance(g), null_deviance = g$null.deviance,
       df_residual = g$df.residual, df_null = g$df.null, aic = -tl_full + 2 * (ncol(X) + 1),
       max_abs_score_beta = pol$max_abs_score_beta, abs_score_theta = pol$abs_score_theta,
       n_newton_polish = pol$n_newton,
       max_abs_coef_change_polish_glm = max(abs(coef(g) - pol$b)),
       glmnb = list(coef = I(unname(coef(nb))), theta = nb$theta, SE_theta = nb$SE.theta,
                    twologlik = nb$twologlik, warnings = I(F$warns)),
       lrt = list(dropped = I(setdiff(PRED, RED)),
                  theta_full = th, theta_reduced = R$pol$th,
                  twologlik_full = tl_full, twologlik_reduced = tl_red,
                  df = ncol(X) - ncol(Xr), stat = tl_full - tl_red,
                  pvalue = pchisq(tl_full - tl_red, ncol(X) - ncol(Xr), lower.tail = FALSE),
                  reduced_coef = I(R$pol$b),
                  reduced_max_abs_score = R$pol$max_abs_score,
                  anova_negbin = list(theta = I(unname(a$theta)), resid_df = I(unname(a[["Resid. df"]])),
                                      twologlik = I(unname(a[["   2 x log-lik."]])),
                                      df = unname(a[["   df"]][2]), stat = unname(a[["LR stat."]][2]),
                                      pvalue = unname(a[["Pr(Chi)"]][2]))))
}
one_nb <- function(y, w) {
  F <- fit_nb(f_full, Xf, y, w)
  R <- fit_nb(f_red, Xr, y, w)
  nb_record(F, R, Xf, y, w)
}

out <- list(
  description = paste(
    "Visium count GLMs with log link and offset log_total (count_design.csv).",
    "Full design: intercept + section_CP + x_std + y_std + lag_TMEFF2; lrt drops x_std, y_std.",
    "poisson: y = counts; gamma: y = counts + 1; negbin: y = counts, theta by ML (polished).",
    "Weighted fits use prior weights = column `weight`. std_err/stat/pvalue from summary()",
    "(Gamma: dispersion = Pearson chi2/df, t; poisson/negbin: dispersion 1, z).",
    "loglik_objective: poisson sum w (y z - e^z), gamma sum w (-y/mu - log mu)."),
  quantiles = I(QUANTILES), predictors = I(PRED), reduced_predictors = I(RED),
  control = list(epsilon = 1e-14, maxit = 1000),
  genes = I(genes), gene_mean = I(unname(gmean[genes])),
  gene_nonzero = I(unname(colSums(cm[, genes] > 0))),
  fits = list()
)
w1 <- rep(1, nrow(d)); wt <- as.numeric(d$weight)
for (g in genes) {
  y <- cm[[g]]
  cat(g, "\n")
  out$fits[[g]] <- list(
    poisson = one_glm(y, w1, poisson(), off),
    poisson_weighted = one_glm(y, wt, poisson(), off),
    gamma = one_glm(y + 1, w1, Gamma(link = "log"), off),
    gamma_weighted = one_glm(y + 1, wt, Gamma(link = "log"), off),
    negbin = one_nb(y, w1),
    negbin_weighted = one_nb(y, wt))
}
out$gamma_total <- one_glm(as.numeric(d$total), w1, Gamma(link = "log"), rep(0, nrow(d)))
out$sessionInfo <- session_info_str()
write_json_file(out, "count_glm.json")
for (g in genes) {
  f <- out$fits[[g]]
  cat(sprintf("%-28s pois %.1e gam %.1e nb %.1e/%.1e theta %.6g (glm.nb %.6g) polish-glm %.1e\n", g,
              f$poisson$max_abs_score, f$gamma$max_abs_score, f$negbin$max_abs_score_beta,
              f$negbin$abs_score_theta, f$negbin$theta, f$negbin$glmnb$theta,
              f$negbin$max_abs_coef_change_polish_glm))
}
