# glmGamPoi's quasi-likelihood machinery on fixed inputs, for tests/test_inference.py
# (stglm._quasi: dispersion trend, QL dispersion, empirical-Bayes shrinkage, F test).
# Inputs : count_design.csv, count_matrix.csv.gz (make_count_data.py; read only)
# Output : inference_ql.json
# Run    : cd tests/references && Rscript inference_ql.R      (~30 s)
#
# 1. fit: glm_gp on every 4th gene of count_matrix.csv.gz (314 genes, all 2327 spots), design
#    ~ section_CP + x_std + y_std, offset = log_total, size_factors = FALSE (defaults otherwise),
#    then test_de(fit, reduced_design = ~ section_CP). The arguments glm_gp hands to
#    overdispersion_shrinkage (gene-wise overdispersions, gene means = rowMeans of the first
#    fit's Mu, df, npoints, ql_disp_trend) are captured by a wrapper put into the namespace, and
#    the reduced model is refitted as test_de does (overdispersion = the full fit's
#    dispersion_trend, overdispersion_shrinkage = FALSE) to store its deviances and Beta.
# 2. cases: overdispersion_shrinkage called directly on fixed inputs (the captured ones and
#    variants: no abundance trend in the prior, few genes, a window wider than the genes, NA and
#    zero-mean genes). For each: glmGamPoi's output and a POLISHED optimum of its own F-fit
#    objective (glmGamPoi stops Nelder-Mead at optim's default reltol 1e-8): the same objective
#    (copied from glmGamPoi:::variance_prior) re-optimised by BFGS and Nelder-Mead at reltol 1e-15
#    until it stops decreasing.
source("json_util.R")
suppressPackageStartupMessages(library(glmGamPoi))

d <- read.csv("count_design.csv")
cm <- read.csv(gzfile("count_matrix.csv.gz"), check.names = FALSE, row.names = 1)
stopifnot(identical(rownames(cm), d$spot))
Y <- t(as.matrix(cm)); storage.mode(Y) <- "double"
sel <- seq(1, nrow(Y), by = 4)
Ys <- Y[sel, ]
cd <- d[, c("section_CP", "x_std", "y_std")]
MM <- model.matrix(~ section_CP + x_std + y_std, cd)
MR <- model.matrix(~ section_CP, cd)

ns <- asNamespace("glmGamPoi")
orig_shrink <- get("overdispersion_shrinkage", ns)
captured <- NULL
wrapper <- function(disp_est, gene_means, df, disp_trend = TRUE, ql_disp_trend = NULL, ...,
                    verbose = FALSE) {
  captured <<- list(disp_est = disp_est, gene_means = gene_means, df = df,
                    ql_disp_trend = ql_disp_trend, dots = list(...))
  orig_shrink(disp_est, gene_means, df, disp_trend = disp_trend, ql_disp_trend = ql_disp_trend,
              ..., verbose = verbose)
}
assignInNamespace("overdispersion_shrinkage", wrapper, "glmGamPoi")
fit <- glm_gp(Ys, design = ~ section_CP + x_std + y_std, col_data = cd, offset = d$log_total,
              size_factors = FALSE)
assignInNamespace("overdispersion_shrinkage", orig_shrink, "glmGamPoi")
stopifnot(!is.null(captured))
de <- test_de(fit, reduced_design = ~ section_CP)
sl <- fit$overdispersion_shrinkage_list
fit_red <- glm_gp(Ys, design = ~ section_CP, col_data = cd, offset = d$log_total,
                  size_factors = FALSE, overdispersion = sl$dispersion_trend,
                  overdispersion_shrinkage = FALSE)
f_check <- (fit_red$deviances - fit$deviances) / 2 / sl$ql_disp_shrunken
stopifnot(max(abs(f_check - de$f_statistic) / pmax(1, abs(de$f_statistic)), na.rm = TRUE) < 1e-12)

# ---- the F-fit objective of glmGamPoi:::variance_prior, and its polished optimum ----------------
prior_objective <- function(s2, df, covariate, abundance_trend) {
  s2_sub <- na.omit(s2)
  const <- function(par) -sum(df(s2_sub / exp(par[1]), df1 = df, df2 = exp(par[2]), log = TRUE) -
                              par[1], na.rm = TRUE)
  use_trend <- !(is.null(covariate) || is.null(abundance_trend) || !abundance_trend ||
                 length(s2_sub) < 10 || sum(covariate > 1e-08, na.rm = TRUE) < 10)
  out <- list(const = const, use_trend = use_trend)
  if (use_trend) {
    covariate_sub <- covariate[!is.na(s2)]
    log_covariate <- log(covariate_sub)
    not_zero <- covariate_sub > 1e-08
    ra <- range(log_covariate[not_zero])
    knots <- ra[1] + c(1/3, 2/3) * (ra[2] - ra[1])
    design <- splines::ns(log_covariate[not_zero], df = 4, knots = knots, intercept = TRUE)
    out$trend <- function(par) {
      variance0 <- exp(design %*% par[1:4]); df0 <- exp(par[5])
      -sum(df(s2_sub[not_zero] / variance0, df1 = df, df2 = df0, log = TRUE) - log(variance0),
           na.rm = TRUE)
    }
    out$design <- design; out$not_zero <- not_zero
    out$init <- lm.fit(design, log(s2_sub[not_zero]))
  }
  out
}
polish <- function(fn, par) {
  best <- fn(par)
  for (k in 1:50) {
    p1 <- optim(par, fn, method = "BFGS", control = list(reltol = 1e-15, maxit = 10000))$par
    p2 <- optim(p1, fn, method = "Nelder-Mead", control = list(reltol = 1e-15, maxit = 20000))$par
    v <- fn(p2)
    if (!(v < best - 1e-13 * abs(best))) { if (v < best) { par <- p2; best <- v }; break }
    par <- p2; best <- v
  }
  list(par = par, value = best)
}
one_case <- function(disp_est, gene_means, df, ql_disp_trend, npoints = NULL) {
  args <- list(disp_est, gene_means = gene_means, df = df, ql_disp_trend = ql_disp_trend)
  if (!is.null(npoints)) args$npoints <- npoints
  r <- do.call(orig_shrink, args)
  ob <- prior_objective(r$ql_disp_estimate, df, gene_means, ql_disp_trend)
  s2 <- r$ql_disp_estimate; ok <- !is.na(s2)
  # glmGamPoi's own first (constant) optimum, then the polished one(s)
  c0 <- optim(c(0, 0), ob$const)
  pc <- polish(ob$const, c0$par)
  res <- list(disp_est = I(disp_est), gene_means = I(gene_means), df = df,
              ql_disp_trend_arg = if (is.null(ql_disp_trend)) NA else ql_disp_trend,
              npoints = if (is.null(npoints)) NA else npoints,
              dispersion_trend = I(r$dispersion_trend), ql_disp_estimate = I(r$ql_disp_estimate),
              ql_disp_trend = I(r$ql_disp_trend), ql_disp_shrunken = I(r$ql_disp_shrunken),
              ql_df0 = r$ql_df0, uses_abundance_trend = ob$use_trend,
              const_gp_par = I(c0$par), const_gp_value = c0$value,
              const_polished_par = I(pc$par), const_polished_value = pc$value)
  v0 <- rep(exp(pc$par[1]), sum(ok)); df0 <- exp(pc$par[2])
  # variance_prior returns variance0 for the non-NA s2 only (shorter than s2 when some are NA)
  gp_v0 <- if (length(r$ql_disp_trend) == length(s2)) r$ql_disp_trend[ok] else r$ql_disp_trend
  res$ql_disp_trend_length <- length(r$ql_disp_trend)
  if (ob$use_trend) {
    nz <- ob$not_zero
    init_par <- c(ob$init$coefficients, 0)
    t0 <- optim(init_par, ob$trend, control = list(maxit = 5000))
    pt <- polish(ob$trend, t0$par)
    v0[nz] <- c(exp(ob$design %*% pt$par[1:4])); df0 <- exp(pt$par[5])
    res$trend_init_fitted <- I(c(ob$design %*% ob$init$coefficients))
    res$trend_gp_value <- t0$value
    res$trend_polished_par <- I(pt$par); res$trend_polished_value <- pt$value
    res$trend_gp_par <- I(t0$par)
    stopifnot(isTRUE(all.equal(unname(c(exp(ob$design %*% t0$par[1:4]))),
                               gp_v0[nz], tolerance = 1e-14)))
  }
  post <- rep(NA, length(s2)); post[ok] <- (df0 * v0 + df * s2[ok]) / (df0 + df)
  v0_full <- rep(NA, length(s2)); v0_full[ok] <- v0
  res$polished_ql_disp_trend <- I(v0_full); res$polished_ql_df0 <- df0
  res$polished_ql_disp_shrunken <- I(post)
  res
}

cap <- captured
cases <- list()
cases$glm_gp_args <- one_case(cap$disp_est, cap$gene_means, cap$df, cap$ql_disp_trend,
                              cap$dots$npoints)
stopifnot(identical(cases$glm_gp_args$ql_disp_shrunken, I(sl$ql_disp_shrunken)) ||
          isTRUE(all.equal(unclass(cases$glm_gp_args$ql_disp_shrunken), sl$ql_disp_shrunken,
                           tolerance = 0)))
cases$no_abundance_trend <- one_case(cap$disp_est, cap$gene_means, cap$df, FALSE)
cases$default_window <- one_case(cap$disp_est, cap$gene_means, cap$df, TRUE)
cases$genes_60 <- one_case(cap$disp_est[1:60], cap$gene_means[1:60], cap$df, NULL)
cases$genes_7_wide_window <- one_case(cap$disp_est[1:7], cap$gene_means[1:7], cap$df, NULL, 100)
cases$genes_8_wide_window <- one_case(cap$disp_est[11:18], cap$gene_means[11:18], cap$df, NULL, 100)
de_na <- cap$disp_est; mn_na <- cap$gene_means
de_na[c(5, 50, 200)] <- NA; mn_na[c(7, 77)] <- 0
cases$na_and_zero_mean <- one_case(de_na, mn_na, cap$df, TRUE, 100)

out <- list(
  description = paste(
    "glmGamPoi QL machinery: fit = glm_gp on every 4th gene (genes), design ~ section_CP +",
    "x_std + y_std, offset log_total, size_factors FALSE; test_de reduced ~ section_CP;",
    "cases = overdispersion_shrinkage on fixed inputs with glmGamPoi's and polished optima."),
  genes = I(rownames(Ys)), gene_index = I(sel - 1L), n_spots = ncol(Ys),
  coef_names = I(colnames(MM)), reduced_coef_names = I(colnames(MR)),
  fit = list(Beta = unname(fit$Beta), overdispersions = I(unname(fit$overdispersions)),
             deviances = I(unname(fit$deviances)),
             dispersion_trend = I(sl$dispersion_trend), ql_disp_estimate = I(sl$ql_disp_estimate),
             ql_disp_trend = I(sl$ql_disp_trend), ql_disp_shrunken = I(sl$ql_disp_shrunken),
             ql_df0 = sl$ql_df0,
             shrinkage_args = list(disp_est = I(cap$disp_est), gene_means = I(cap$gene_means),
                                   df = cap$df, ql_disp_trend = cap$ql_disp_trend,
                                   npoints = cap$dots$npoints)),
  reduced_fit = list(Beta = unname(fit_red$Beta), deviances = I(unname(fit_red$deviances))),
  test_de = list(pval = I(de$pval), adj_pval = I(de$adj_pval), f_statistic = I(de$f_statistic),
                 df1 = I(de$df1), df2 = I(de$df2)),
  cases = cases,
  sessionInfo = session_info_str())
write_json_file(out, "inference_ql.json")
for (nm in names(cases)) {
  cs <- cases[[nm]]
  cat(sprintf("%-22s df0 gp %.6g polished %.6g  max rel shrunk diff %.2e  trend=%s\n", nm, cs$ql_df0,
              cs$polished_ql_df0,
              max(abs(cs$ql_disp_shrunken / cs$polished_ql_disp_shrunken - 1), na.rm = TRUE),
              cs$uses_abundance_trend))
}
