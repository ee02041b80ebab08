# R peer of bench_tests.py: glmGamPoi's per-gene tests, timed inside R.
#
# Usage: Rscript tests_peers.R spec.json out.json
# spec.json (written by bench_tests.py through common.run_r):
#   arrays: {name: {path, nrow, ncol}} raw float64, column-major: Y (genes x cells counts),
#           X (cells x m full design incl. the intercept), Xr (cells x k reduced design),
#           off (cells: the offset, log total counts);
#   tasks: [{kind: "glm_gp_tests", repeats, colnames, colnames_reduced}].
# Per repeat (gc(reset = TRUE) before each step; system.time for each):
#   1. fit   <- glm_gp(Y, design = X, offset = off, size_factors = FALSE,
#                      overdispersion = TRUE, on_disk = FALSE)        (default shrinkage: the
#               QL dispersions test_de needs; Beta/Mu use the gene-wise overdispersions)
#   2. de    <- test_de(fit, reduced_design = Xr)                      (QL F-test; it refits
#               the reduced model at the full model's dispersion trend)
#   3. fit_r <- glm_gp(Y, design = Xr, offset = off, size_factors = FALSE,
#                      overdispersion = TRUE, overdispersion_shrinkage = FALSE, on_disk = FALSE)
#   4. the likelihood-ratio test, which glmGamPoi does not offer (test_de is the QL F-test
#      only): ℓ per gene = Σ dnbinom(y, mu = Mu, size = 1/overdispersion, log = TRUE) (dpois
#      where the overdispersion is 0) under each fit, its own Cox–Reid θ per model (as
#      anova.negbin re-estimates θ), LR = 2(ℓ_full − ℓ_reduced), p = pchisq(LR, m − k, upper),
#      q = p.adjust(p, "BH").
# QL time = 1 + 2; LR time = 1 + 3 + 4 (step 1's shrinkage is not needed for the LR test; its
# share is small). Reported: medians over the repeats of elapsed and CPU (user + system),
# the largest rise of gc() "max used" (Mb, R heap only: glmGamPoi's C++ allocations are not
# counted) per step, and /proc/self/status VmHWM / VmRSS (kB).
suppressPackageStartupMessages({
  library(jsonlite)
  library(glmGamPoi)
})

args <- commandArgs(trailingOnly = TRUE)
spec <- fromJSON(args[1], simplifyVector = FALSE)

read_array <- function(m) matrix(readBin(m$path, "double", n = m$nrow * m$ncol), m$nrow, m$ncol)
proc_status <- function() {
  s <- readLines("/proc/self/status")
  kb <- function(key) as.numeric(sub("[^0-9]*([0-9]+).*", "\\1", grep(paste0("^", key, ":"), s, value = TRUE)))
  list(VmHWM_kB = kb("VmHWM"), VmRSS_kB = kb("VmRSS"))
}
gc_max_mb <- function() { g <- gc(); sum(g[, ncol(g)]) }

arrays <- lapply(spec$arrays, read_array)
rss_after_load <- proc_status()

step <- function(expr_fun) {
  invisible(gc(reset = TRUE)); base <- gc_max_mb()
  out <- NULL
  t <- system.time(out <- expr_fun())
  list(out = out, elapsed = t[["elapsed"]], cpu = t[["user.self"]] + t[["sys.self"]],
       mem = gc_max_mb() - base)
}

nb_loglik <- function(Y, Mu, od) {
  ll <- numeric(nrow(Y))
  pois <- od <= 0
  if (any(!pois)) {
    i <- which(!pois)
    ll[i] <- rowSums(dnbinom(Y[i, , drop = FALSE], mu = Mu[i, , drop = FALSE], size = 1 / od[i],
                             log = TRUE))
  }
  if (any(pois)) {
    i <- which(pois)
    ll[i] <- rowSums(dpois(Y[i, , drop = FALSE], Mu[i, , drop = FALSE], log = TRUE))
  }
  ll
}

results <- list()
for (task in spec$tasks) {
  stopifnot(task$kind == "glm_gp_tests")
  Y <- arrays$Y; X <- arrays$X; Xr <- arrays$Xr; off <- as.vector(arrays$off)
  colnames(X) <- unlist(task$colnames); colnames(Xr) <- unlist(task$colnames_reduced)
  reps <- as.integer(task$repeats)
  steps <- c("glm_gp_full", "test_de", "glm_gp_reduced", "lr")
  el <- matrix(NA_real_, reps, 4, dimnames = list(NULL, steps)); cpu <- el; mem <- el
  for (r in seq_len(reps)) {
    s1 <- step(function() glm_gp(Y, design = X, offset = off, size_factors = FALSE,
                                 overdispersion = TRUE, on_disk = FALSE))
    fit <- s1$out
    s2 <- step(function() test_de(fit, reduced_design = Xr))
    de <- s2$out
    s3 <- step(function() glm_gp(Y, design = Xr, offset = off, size_factors = FALSE,
                                 overdispersion = TRUE, overdispersion_shrinkage = FALSE,
                                 on_disk = FALSE))
    fit_r <- s3$out
    s4 <- step(function() {
      lr <- 2 * (nb_loglik(Y, fit$Mu, fit$overdispersions) -
                 nb_loglik(Y, fit_r$Mu, fit_r$overdispersions))
      p <- pchisq(lr, df = ncol(X) - ncol(Xr), lower.tail = FALSE)
      list(stat = lr, pvalue = p, qvalue = p.adjust(p, method = "BH"))
    })
    lrt <- s4$out
    for (k in 1:4) {
      s <- list(s1, s2, s3, s4)[[k]]
      el[r, k] <- s$elapsed; cpu[r, k] <- s$cpu; mem[r, k] <- s$mem
    }
  }
  med <- function(m, cols) median(rowSums(m[, cols, drop = FALSE]))
  na <- function(x) ifelse(is.finite(x), x, NA)
  results[[length(results) + 1]] <- list(
    kind = task$kind, n_genes = nrow(Y), n_obs = ncol(Y), repeats = reps,
    ql_elapsed = med(el, c(1, 2)), ql_cpu = med(cpu, c(1, 2)),
    lr_elapsed = med(el, c(1, 3, 4)), lr_cpu = med(cpu, c(1, 3, 4)),
    elapsed = setNames(lapply(steps, function(s) I(el[, s])), steps),
    cpu = setNames(lapply(steps, function(s) I(cpu[, s])), steps),
    steps = steps,
    gc_max_used_rise_mb = setNames(lapply(steps, function(s) max(mem[, s])), steps),
    ql = list(stat = I(na(de$f_statistic)), pvalue = I(na(de$pval)), qvalue = I(na(de$adj_pval)),
              df1 = de$df1[1], df2 = I(na(de$df2))),
    lr = list(stat = I(na(lrt$stat)), pvalue = I(na(lrt$pvalue)), qvalue = I(na(lrt$qvalue))),
    overdispersion_full = I(na(fit$overdispersions)),
    overdispersion_reduced = I(na(fit_r$overdispersions)))
}
mem <- proc_status()
out <- list(results = results, VmHWM_kB = mem$VmHWM_kB, VmRSS_kB = mem$VmRSS_kB,
            VmRSS_after_load_kB = rss_after_load$VmRSS_kB,
            versions = paste(R.version.string, "glmGamPoi", as.character(packageVersion("glmGamPoi"))))
writeLines(toJSON(out, auto_unbox = TRUE, digits = NA, na = "null"), args[2])
