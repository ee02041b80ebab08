# NB size theta for fixed means on 22 Visium genes: MASS::theta.ml (ML, with and without
# sample weights) and glmGamPoi::overdispersion_mle (ML and Cox-Reid adjusted).
# Input : nb_theta_data.csv (made by make_nb_theta_data.py)
# Output: nb_theta.json
# Run   : cd tests/references && Rscript nb_theta.R
# theta = NB size (variance mu + mu^2/theta) = 1/glmGamPoi's overdispersion.
source("json_util.R")
suppressPackageStartupMessages({
  library(MASS)
  library(glmGamPoi)
})

d <- read.csv("nb_theta_data.csv", check.names = FALSE)
genes <- colnames(d)[-(1:4)]
X <- cbind(intercept = 1, np_section = d$np_section)   # the design, intercept included
w <- d$weight
THETA_GRID <- c(0.1, 1, 10, 100)
ctrl <- glm.control(epsilon = 1e-14, maxit = 100)

# Value, warnings and error of an expression: theta.ml warns at its iteration limit, and
# stops with an error when its Newton iteration in theta runs off to NaN (Poisson-like genes).
with_warnings <- function(expr) {
  msgs <- character()
  err <- character()
  value <- tryCatch(withCallingHandlers(expr, warning = function(wn) {
    msgs <<- c(msgs, conditionMessage(wn))
    invokeRestart("muffleWarning")
  }), error = function(e) {
    err <<- conditionMessage(e)
    NA_real_
  })
  list(value = value, warnings = msgs, error = err)
}

# MASS's own score in theta (from theta.ml's body), to show where it stopped.
mass_score <- function(th, mu, y, wt) if (is.na(th)) NA else sum(wt * (digamma(th + y) - digamma(th) + log(th) + 1 -
                                                log(th + mu) - (y + th) / (mu + th)))
# -1/2 log det(X' W X), W = mu / (1 + mu/theta): the Cox-Reid term (log link).
cr_term <- function(th, mu) {
  wd <- mu / (1 + mu / th)
  -0.5 * as.numeric(determinant(crossprod(X, X * wd), logarithm = TRUE)$modulus)
}
gp_loglik <- function(y, mu, th, cr) {
  glmGamPoi:::conventional_loglikelihood_fast(y, mu = mu, log_theta = log(1 / th),
                                              model_matrix = X, do_cr_adj = cr)
}

one_gene <- function(g) {
  y <- d[[g]]
  fit <- glm(y ~ np_section + offset(log(total)), family = poisson, data = d, control = ctrl)
  mu <- as.numeric(fitted(fit))
  ml <- with_warnings(theta.ml(y, mu, limit = 100, eps = 1e-12))
  mlw <- with_warnings(theta.ml(y, mu, weights = w, limit = 100, eps = 1e-12))
  gp_cr <- overdispersion_mle(y, mean = mu, model_matrix = X, do_cox_reid_adjustment = TRUE)
  gp_ml <- overdispersion_mle(y, mean = mu, model_matrix = X, do_cox_reid_adjustment = FALSE)
  gp_at <- function(est, cr) if (est > 0) gp_loglik(y, mu, 1 / est, cr) else NA
  list(
    gene = g,
    n_nonzero = sum(y > 0),
    poisson_coef = I(unname(coef(fit))),
    poisson_iter = fit$iter,
    mass_theta = as.numeric(ml$value),
    mass_se = if (is.null(attr(ml$value, "SE"))) NA else attr(ml$value, "SE"),
    mass_warnings = I(ml$warnings),
    mass_error = I(ml$error),
    mass_score = mass_score(as.numeric(ml$value), mu, y, rep(1, length(y))),
    mass_theta_weighted = as.numeric(mlw$value),
    mass_warnings_weighted = I(mlw$warnings),
    mass_error_weighted = I(mlw$error),
    mass_score_weighted = mass_score(as.numeric(mlw$value), mu, y, w),
    gp_cr_overdispersion = gp_cr$estimate,
    gp_cr_iterations = gp_cr$iterations,
    gp_cr_message = gp_cr$message,
    gp_cr_objective = gp_at(gp_cr$estimate, TRUE),
    gp_ml_overdispersion = gp_ml$estimate,
    gp_ml_iterations = gp_ml$iterations,
    gp_ml_message = gp_ml$message,
    grid_gp_loglik_ml = I(sapply(THETA_GRID, function(th) gp_loglik(y, mu, th, FALSE))),
    grid_gp_loglik_cr = I(sapply(THETA_GRID, function(th) gp_loglik(y, mu, th, TRUE))),
    grid_cr_term = I(sapply(THETA_GRID, function(th) cr_term(th, mu)))
  )
}

out <- list(
  description = paste(
    "NB size theta (variance mu + mu^2/theta) for fixed means mu = fitted values of",
    "glm(y ~ np_section + offset(log(total)), poisson) per gene; see README.md, 'NB size theta for fixed means'."),
  genes = I(genes),
  design_columns = I(colnames(X)),
  theta_grid = I(THETA_GRID),
  calls = list(
    poisson = "glm(y ~ np_section + offset(log(total)), family = poisson, control = glm.control(epsilon = 1e-14, maxit = 100))",
    mass = "MASS::theta.ml(y, mu, limit = 100, eps = 1e-12)",
    mass_weighted = "MASS::theta.ml(y, mu, weights = weight, limit = 100, eps = 1e-12)",
    gp_cr = "glmGamPoi::overdispersion_mle(y, mean = mu, model_matrix = X, do_cox_reid_adjustment = TRUE)",
    gp_ml = "glmGamPoi::overdispersion_mle(y, mean = mu, model_matrix = X, do_cox_reid_adjustment = FALSE)",
    grid_gp_loglik = "glmGamPoi:::conventional_loglikelihood_fast(y, mu, log(1/theta), X, do_cr_adj)"
  ),
  versions = list(R = R.version.string, MASS = as.character(packageVersion("MASS")),
                  glmGamPoi = as.character(packageVersion("glmGamPoi"))),
  fits = lapply(genes, one_gene),
  sessionInfo = session_info_str()
)
write_json_file(out, "nb_theta.json")
