# Sandwich (HC0) covariances of unpenalised count GLMs and BH-adjusted p-values, for
# tests/test_inference.py (GLM.coef_table(robust=True), stglm._inference.benjamini_hochberg).
# Inputs : count_design.csv, count_matrix.csv.gz (make_count_data.py; read only)
# Output : inference_glm.json
# Run    : cd tests/references && Rscript inference_glm.R     (a few seconds)
#
# sandwich: for genes GENES, glm(y ~ section_CP + x_std + y_std + lag_TMEFF2 +
#   offset(log_total)) with poisson (unweighted and with prior weights = column `weight`),
#   Gamma(link = "log") on y + 1, and MASS::glm.nb (theta by ML); then
#   sandwich::vcovHC(fit, type = "HC0"). As in count_glm.R, the fit whose working weights and
#   residuals sandwich reads is one extra IRLS iteration (maxit = 1) started at the converged
#   coefficients, so they are those at the optimum. Also stored: sandwich's own pieces, bread()
#   and meat() (vcovHC = bread %*% meat %*% bread / n), and summary()'s dispersion.
# bh: p.adjust(p, "BH") on a fixed vector with ties, NA, 0 and 1 (p.adjust leaves NA out: n is
#   the number of non-NA p), and on 1,000 uniform draws (set.seed(12)).
source("json_util.R")
suppressPackageStartupMessages({library(MASS); library(sandwich)})

GENES <- c("DCLK1", "FXYD1", "COL6A3", "TMEFF2")
PRED <- c("section_CP", "x_std", "y_std", "lag_TMEFF2")
ctrl <- glm.control(epsilon = 1e-14, maxit = 1000)
d <- read.csv("count_design.csv")
cm <- read.csv(gzfile("count_matrix.csv.gz"), check.names = FALSE, row.names = 1)
stopifnot(identical(rownames(cm), d$spot))
form <- as.formula(paste("yy ~", paste(PRED, collapse = " + "), "+ offset(log_total)"))

at_optimum <- function(fit, fam, dd) {
  for (k in 1:20) fit <- glm(form, family = fam, data = dd, weights = ww, start = coef(fit),
                             control = ctrl)
  suppressWarnings(glm(form, family = fam, data = dd, weights = ww, start = coef(fit),
                       control = glm.control(epsilon = 1e-14, maxit = 1)))
}
record <- function(fit) {
  list(coef = I(unname(coef(fit))), vcovHC = unname(vcovHC(fit, type = "HC0")),
       se_HC0 = I(unname(sqrt(diag(vcovHC(fit, type = "HC0"))))),
       bread = unname(bread(fit)), meat = unname(meat(fit)),
       summary_dispersion = summary(fit)$dispersion)
}
out <- list(genes = I(GENES), predictors = I(PRED), sandwich = list())
for (g in GENES) {
  y <- cm[[g]]
  res <- list()
  for (case in c("poisson", "poisson_weighted", "gamma", "negbin")) {
    w <- if (case == "poisson_weighted") as.numeric(d$weight) else rep(1, nrow(d))
    dd <- cbind(d, yy = if (case == "gamma") y + 1 else y, ww = w)
    if (case == "negbin") {
      nb <- glm.nb(form, data = dd, weights = ww, control = ctrl)
      fam <- negative.binomial(nb$theta)
      fit <- at_optimum(glm(form, family = fam, data = dd, weights = ww, control = ctrl), fam, dd)
      r <- record(fit); r$theta <- nb$theta
    } else {
      fam <- if (case == "gamma") Gamma(link = "log") else poisson()
      fit <- at_optimum(glm(form, family = fam, data = dd, weights = ww, control = ctrl), fam, dd)
      r <- record(fit)
    }
    res[[case]] <- r
  }
  out$sandwich[[g]] <- res
}
p_fixed <- c(0.01, 0.04, 0.04, NA, 0.2, 0.03, 1, 0, 0.04, NA, 0.5, 0.03, 0.9, 0.001)
set.seed(12); p_unif <- runif(1000)^2
out$bh <- list(p_fixed = I(p_fixed), q_fixed = I(p.adjust(p_fixed, "BH")),
               p_uniform = I(p_unif), q_uniform = I(p.adjust(p_unif, "BH")))
out$sessionInfo <- session_info_str()
write_json_file(out, "inference_glm.json")
cat("done\n")
