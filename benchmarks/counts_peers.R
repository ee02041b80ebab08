# R peers of bench_counts.py: glmGamPoi::glm_gp and a MASS::glm.nb loop, timed inside R.
#
# Usage: Rscript counts_peers.R spec.json out.json
# spec.json (written by bench_counts.py through common.run_r, or by its synthetic job):
#   arrays: {name: {path, nrow, ncol}} raw float64, column-major (common.run_r), and/or
#   csr: {indptr, indices, data, n_obs, n_genes} raw int32/int32/float64 files of a
#        cells x genes CSR matrix (the synthetic case: read as a genes x cells dgCMatrix);
#   tasks: list of {kind, ...}:
#     kind "glm_gp": Y (genes x cells array) or the csr, X (cells x m design incl. the
#       intercept), offset (cells), genes (optional: the first `genes` rows only),
#       shrinkage (TRUE/FALSE), repeats; glm_gp(Y, design = X, offset = offset,
#       size_factors = FALSE, overdispersion = TRUE, overdispersion_shrinkage = shrinkage,
#       on_disk = FALSE). Returns the median elapsed / CPU (user + system) seconds of
#       system.time over the repeats (after no warm-up: R has no JIT to warm, and glm_gp's
#       first call is not slower), Beta, overdispersions and the memory (below).
#     kind "glm_nb": the loop of MASS::glm.nb(y ~ X - 1 + offset(offset)) over all genes,
#       default control; each gene's warnings and errors are recorded. Returns the
#       elapsed / CPU seconds of the whole loop (repeats: median), coefficients and theta.
# Memory: gc(reset = TRUE) before each call and the rise of R's "max used" (Mb) above the
# level before it (R heap: vectors and cons cells; C++ allocations of glmGamPoi are not
# counted), and /proc/self/status VmHWM / VmRSS of this process (kB) at the end.
suppressPackageStartupMessages({
  library(jsonlite)
  library(glmGamPoi)
  library(MASS)
  library(Matrix)
})

args <- commandArgs(trailingOnly = TRUE)
spec <- fromJSON(args[1], simplifyVector = FALSE)

read_array <- function(m) {
  matrix(readBin(m$path, "double", n = m$nrow * m$ncol), m$nrow, m$ncol)
}
proc_status <- function() {
  s <- readLines("/proc/self/status")
  kb <- function(key) as.numeric(sub("[^0-9]*([0-9]+).*", "\\1", grep(paste0("^", key, ":"), s, value = TRUE)))
  list(VmHWM_kB = kb("VmHWM"), VmRSS_kB = kb("VmRSS"))
}
gc_max_mb <- function() {
  g <- gc()
  sum(g[, ncol(g)])  # "max used" (Mb) of Ncells and Vcells
}

arrays <- lapply(spec$arrays, read_array)
if (!is.null(spec$csr)) {
  cs <- spec$csr
  n_obs <- cs$n_obs; n_genes <- cs$n_genes
  indptr <- readBin(cs$indptr, "integer", n = n_obs + 1, size = 4)
  nnz <- indptr[n_obs + 1]
  indices <- readBin(cs$indices, "integer", n = nnz, size = 4)
  values <- readBin(cs$data, "double", n = nnz)
  # a cells x genes CSR is a genes x cells CSC
  arrays$Ycsr <- sparseMatrix(i = indices + 1L, p = indptr, x = values, dims = c(n_genes, n_obs),
                              index1 = TRUE)
  rm(indices, values, indptr)
}
rss_after_load <- proc_status()

time_it <- function(fun, repeats) {
  el <- numeric(repeats); cpu <- numeric(repeats); mem <- numeric(repeats); out <- NULL
  for (r in seq_len(repeats)) {
    invisible(gc(reset = TRUE)); base <- gc_max_mb()
    t <- system.time(out <- fun())
    el[r] <- t[["elapsed"]]; cpu[r] <- t[["user.self"]] + t[["sys.self"]]
    mem[r] <- gc_max_mb() - base
  }
  list(out = out, elapsed = median(el), cpu = median(cpu), elapsed_all = I(el), cpu_all = I(cpu),
       gc_max_used_rise_mb = max(mem))
}

results <- list()
for (task in spec$tasks) {
  X <- arrays[[task$X]]
  off <- as.vector(arrays[[task$offset]])
  reps <- if (is.null(task$repeats)) 1L else as.integer(task$repeats)
  if (task$kind == "glm_gp") {
    Y <- if (!is.null(task$Y)) arrays[[task$Y]] else arrays$Ycsr
    if (!is.null(task$genes)) Y <- Y[seq_len(task$genes), , drop = FALSE]
    if (is(Y, "sparseMatrix")) Y <- as.matrix(Y)   # glm_gp's on_disk = FALSE does the same
    shrink <- isTRUE(task$shrinkage)
    tm <- time_it(function() glm_gp(Y, design = X, offset = off, size_factors = FALSE,
                                     overdispersion = TRUE, overdispersion_shrinkage = shrink,
                                     on_disk = FALSE), reps)
    fit <- tm$out
    res <- list(kind = "glm_gp", label = task$label, shrinkage = shrink, n_genes = nrow(Y),
                n_obs = ncol(Y), elapsed = tm$elapsed, cpu = tm$cpu,
                elapsed_all = tm$elapsed_all, cpu_all = tm$cpu_all,
                gc_max_used_rise_mb = tm$gc_max_used_rise_mb)
    if (isTRUE(task$return_fit)) {
      res$Beta <- unname(fit$Beta)  # genes x m
      res$overdispersions <- I(unname(fit$overdispersions))
    }
    results[[length(results) + 1]] <- res
  } else if (task$kind == "glm_nb") {
    Y <- arrays[[task$Y]]  # genes x cells
    G <- nrow(Y)
    one_loop <- function() {
      coef <- matrix(NA_real_, G, ncol(X)); theta <- rep(NA_real_, G)
      n_warn <- integer(G); err <- character(G); warn_msg <- character(G)
      for (g in seq_len(G)) {
        y <- Y[g, ]
        fit <- withCallingHandlers(
          tryCatch(glm.nb(y ~ X - 1 + offset(off)),
                   error = function(e) { err[g] <<- conditionMessage(e); NULL }),
          warning = function(w) {
            n_warn[g] <<- n_warn[g] + 1L
            if (warn_msg[g] == "") warn_msg[g] <<- conditionMessage(w)
            invokeRestart("muffleWarning")
          })
        if (!is.null(fit)) { coef[g, ] <- unname(coef(fit)); theta[g] <- fit$theta }
      }
      list(coef = coef, theta = theta, n_warn = n_warn, err = err, warn_msg = warn_msg)
    }
    tm <- time_it(one_loop, reps)
    o <- tm$out
    results[[length(results) + 1]] <- list(
      kind = "glm_nb", label = task$label, n_genes = G, elapsed = tm$elapsed, cpu = tm$cpu,
      elapsed_all = tm$elapsed_all, cpu_all = tm$cpu_all,
      gc_max_used_rise_mb = tm$gc_max_used_rise_mb,
      coef = o$coef, theta = I(ifelse(is.finite(o$theta), o$theta, NA)),
      n_warn = I(o$n_warn), error = I(o$err), warning = I(o$warn_msg))
  } else {
    stop("unknown task kind ", task$kind)
  }
}
mem <- proc_status()
out <- list(results = results, VmHWM_kB = mem$VmHWM_kB, VmRSS_kB = mem$VmRSS_kB,
            VmRSS_after_load_kB = rss_after_load$VmRSS_kB,
            versions = paste(R.version.string, "glmGamPoi", as.character(packageVersion("glmGamPoi")),
                             "MASS", as.character(packageVersion("MASS")),
                             "Matrix", as.character(packageVersion("Matrix"))))
writeLines(toJSON(out, auto_unbox = TRUE, digits = NA, na = "null"), args[2])
