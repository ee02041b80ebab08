# Minimal JSON writer with full double precision (sprintf("%.17g")), because
# jsonlite::toJSON rounds to 15 significant digits.
# Rules: named list -> object; unnamed list -> array; matrix -> array of rows;
# atomic vector of length 1 -> scalar unless wrapped in I(); otherwise array;
# NA / NaN -> null; Inf -> 1e999 is not valid JSON so -> null too (never expected).
num_str <- function(x) {
  out <- sprintf("%.17g", x)
  out[is.na(x) | !is.finite(x)] <- "null"
  out
}
json_escape <- function(s) {
  s <- gsub("\\", "\\\\", s, fixed = TRUE)
  s <- gsub("\"", "\\\"", s, fixed = TRUE)
  s <- gsub("\n", "\\n", s, fixed = TRUE)
  s <- gsub("\t", "\\t", s, fixed = TRUE)
  s
}
to_json <- function(x, indent = 0) {
  pad <- strrep(" ", indent + 2)
  pad0 <- strrep(" ", indent)
  if (is.null(x)) return("null")
  if (is.list(x)) {
    if (length(x) == 0) return(if (is.null(names(x))) "[]" else "{}")
    items <- vapply(x, to_json, "", indent = indent + 2)
    if (!is.null(names(x))) {
      items <- paste0('"', names(x), '": ', items)
      return(paste0("{\n", pad, paste(items, collapse = paste0(",\n", pad)), "\n", pad0, "}"))
    }
    return(paste0("[\n", pad, paste(items, collapse = paste0(",\n", pad)), "\n", pad0, "]"))
  }
  if (is.matrix(x)) {
    rows <- vapply(seq_len(nrow(x)), function(i) to_json(I(unname(x[i, ])), indent + 2), "")
    return(paste0("[\n", pad, paste(rows, collapse = paste0(",\n", pad)), "\n", pad0, "]"))
  }
  as_array <- inherits(x, "AsIs") || length(x) != 1
  x <- unclass(x)
  if (is.character(x) || is.factor(x)) {
    s <- ifelse(is.na(x), "null", paste0('"', json_escape(as.character(x)), '"'))
  } else if (is.logical(x)) {
    s <- ifelse(is.na(x), "null", ifelse(x, "true", "false"))
  } else {
    s <- num_str(as.numeric(x))
  }
  if (as_array) paste0("[", paste(s, collapse = ", "), "]") else s
}
write_json_file <- function(x, path) writeLines(to_json(x), path)
session_info_str <- function() paste(capture.output(sessionInfo()), collapse = "\n")
