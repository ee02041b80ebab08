# glmnet / cv.glmnet timings for the stglm benchmarks (called by common.py's run_r).
#
# Usage: Rscript glmnet_bench.R spec.json out.json
# spec.json: {"arrays": {name: {path, nrow, ncol}}, "tasks": [...]}; arrays are raw float64,
# column-major. All timing happens here, in R, after the data are read and converted: the
# Python side's file writing and R's reading are never timed.
#
# Task types
#   fit: glmnet(X, y, family="poisson", alpha, lambda, standardize=FALSE, intercept=TRUE,
#        thresh, maxit) for each thresh of `ladder` in turn until the KKT residual of the
#        solution at the last lambda is <= target; that call is then timed.
#   cv:  cv.glmnet(X, y, family="poisson", alpha, lambda, foldid, type.measure="deviance",
#        standardize=FALSE, thresh, maxit), timed.
# Timing: one warm-up call, then `repeats` repeats of `number` calls (number chosen so a
# repeat lasts >= min_time seconds); the median per-call wall time (Sys.time), the fastest
# repeat, and the median CPU time of the R process (proc.time user + sys) are reported.
# Memory: gc(reset=TRUE) before one call, then the rise of gc()'s "max used" (Ncells+Vcells,
# Mb) over the level before it: R's heap only (glmnet's Fortran work arrays are not counted).
suppressMessages(library(glmnet))
suppressMessages(library(jsonlite))
glmnet.control(fdev = 0, devmax = 1) # never cut a path short

args <- commandArgs(trailingOnly = TRUE)
spec <- fromJSON(args[1], simplifyVector = TRUE, simplifyDataFrame = FALSE,
                 simplifyMatrix = FALSE)

read_array <- function(a) {
  x <- readBin(a$path, "double", a$nrow * a$ncol)
  if (a$ncol == 1) x else matrix(x, a$nrow, a$ncol)
}
arrays <- lapply(spec$arrays, read_array)

now <- function() as.numeric(Sys.time())

cpu <- function() {
  pt <- proc.time()
  pt[["user.self"]] + pt[["sys.self"]]
}

median_time <- function(f, repeats, min_time) {
  t0 <- now(); f(); first <- now() - t0
  number <- max(1, ceiling(min_time / max(first, 1e-6)))
  times <- numeric(repeats)
  cpus <- numeric(repeats)
  for (r in seq_len(repeats)) {
    t0 <- now(); c0 <- cpu()
    for (i in seq_len(number)) f()
    times[r] <- (now() - t0) / number
    cpus[r] <- (cpu() - c0) / number
  }
  list(median = median(times), min = min(times), cpu = median(cpus), times = times,
       number = number, warmup = first)
}

peak_mb <- function(f) {
  invisible(gc(reset = TRUE))
  before <- sum(gc()[, 2])
  f()
  sum(gc()[, 6]) - before
}

kkt <- function(X, y, a0, b, lam, alpha) {
  r <- exp(a0 + drop(X %*% b)) - y
  g <- drop(crossprod(X, r)) / length(y) + lam * (1 - alpha) * b
  v <- ifelse(b != 0, abs(g + lam * alpha * sign(b)), pmax(abs(g) - lam * alpha, 0))
  max(abs(mean(r)), max(v))
}

# Full-precision JSON ("%.17g"): jsonlite rounds to 15 significant digits.
num_str <- function(x) {
  s <- sprintf("%.17g", x)
  s[!is.finite(x)] <- "null"
  s
}
to_json <- function(x) {
  if (is.null(x)) return("null")
  if (is.list(x)) {
    items <- vapply(x, to_json, "")
    if (!is.null(names(x))) {
      return(paste0("{", paste0('"', names(x), '":', items, collapse = ","), "}"))
    }
    return(paste0("[", paste(items, collapse = ","), "]"))
  }
  if (is.matrix(x)) {
    return(paste0("[", paste(vapply(seq_len(nrow(x)), function(i) to_json(I(x[i, ])), ""),
                             collapse = ","), "]"))
  }
  scalar <- length(x) == 1 && !inherits(x, "AsIs")
  x <- unclass(x)
  s <- if (is.character(x)) paste0('"', x, '"') else if (is.logical(x)) {
    ifelse(x, "true", "false")
  } else num_str(as.numeric(x))
  if (scalar) s else paste0("[", paste(s, collapse = ","), "]")
}

run_fit <- function(task) {
  X <- arrays[[task$X]]
  y <- arrays[[task$y]]
  lam <- as.numeric(task$lambda)
  k <- length(lam)
  call_fit <- function(th) {
    glmnet(X, y, family = "poisson", alpha = task$alpha, lambda = lam, standardize = FALSE,
           intercept = TRUE, thresh = th, maxit = task$maxit)
  }
  chosen <- NULL
  for (th in task$ladder) {
    fit <- call_fit(th)
    res <- kkt(X, y, fit$a0[k], as.numeric(fit$beta[, k]), lam[k], task$alpha)
    chosen <- list(thresh = th, fit = fit, kkt = res)
    if (res <= task$target) break
  }
  th <- chosen$thresh
  tm <- median_time(function() call_fit(th), task$repeats, task$min_time)
  mem <- peak_mb(function() call_fit(th))
  fit <- chosen$fit
  list(name = task$name, thresh = th, kkt_R = chosen$kkt, reached = chosen$kkt <= task$target,
       a0 = fit$a0[k], beta = I(as.numeric(fit$beta[, k])), npasses = fit$npasses,
       n_lambda = k, time = tm$median, time_min = tm$min, cpu = tm$cpu, times = I(tm$times),
       number = tm$number,
       warmup = tm$warmup, mem_mb = mem)
}

run_cv <- function(task) {
  X <- arrays[[task$X]]
  y <- arrays[[task$y]]
  foldid <- as.integer(arrays[[task$foldid]])
  lam <- as.numeric(task$lambda)
  call_cv <- function() {
    cv.glmnet(X, y, family = "poisson", alpha = task$alpha, lambda = lam, foldid = foldid,
              type.measure = "deviance", standardize = FALSE, intercept = TRUE,
              thresh = task$thresh, maxit = task$maxit)
  }
  fit <- call_cv()
  tm <- median_time(call_cv, task$repeats, task$min_time)
  mem <- peak_mb(call_cv)
  beta <- as.matrix(fit$glmnet.fit$beta)
  list(name = task$name, thresh = task$thresh, time = tm$median, time_min = tm$min,
       cpu = tm$cpu, times = I(tm$times),
       number = tm$number, warmup = tm$warmup, mem_mb = mem, cvm = I(fit$cvm),
       index_min = which(fit$lambda == fit$lambda.min)[1], lambda_min = fit$lambda.min,
       a0 = I(as.numeric(fit$glmnet.fit$a0)), beta = t(beta))
}

out <- lapply(spec$tasks, function(task) {
  if (task$type == "fit") run_fit(task) else run_cv(task)
})
writeLines(to_json(out), args[2])
