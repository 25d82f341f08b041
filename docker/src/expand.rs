//! `$VAR` expansion as GitLab Runner does it (Go's `os.Expand` over the job's variables): image
//! and service names, cache keys and paths, artifact names and paths all go through this one.

/// Replaces `$NAME` and `${NAME}` by `lookup(NAME)`, or by nothing when it has none; `$$` is a
/// `$`. A `$` not followed by a name stays as it is. Values are not expanded again.
pub fn expand<'v>(text: &str, lookup: impl Fn(&str) -> Option<&'v str>) -> String {
    if !text.contains('$') {
        return text.to_string();
    }
    let lookup = |name: &str| lookup(name).unwrap_or("");
    let is_name = |c: char| c.is_ascii_alphanumeric() || c == '_';
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(dollar) = rest.find('$') {
        out.push_str(&rest[..dollar]);
        let after = &rest[dollar + 1..];
        if let Some(braced) = after.strip_prefix('{') {
            match braced.find('}') {
                Some(end) if end > 0 => {
                    out.push_str(lookup(&braced[..end]));
                    rest = &braced[end + 1..];
                }
                // `${}` or an unclosed `${`: Go drops the bad syntax.
                Some(end) => rest = &braced[end + 1..],
                None => rest = "",
            }
        } else if let Some(tail) = after.strip_prefix('$') {
            out.push('$');
            rest = tail;
        } else {
            let end = after.find(|c: char| !is_name(c)).unwrap_or(after.len());
            if end == 0 {
                out.push('$');
            } else {
                out.push_str(lookup(&after[..end]));
            }
            rest = &after[end..];
        }
    }
    out.push_str(rest);
    out
}
