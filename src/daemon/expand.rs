//! `$VAR` expansion of job-payload values (image and service names, aliases) against the job's
//! variables, as GitLab Runner expands them (Go's `os.Expand`).

use drover_docker::Variable;

/// Replaces `$NAME` and `${NAME}` by the value of the last variable called `NAME` (later
/// variables win, as in the job's environment), or by nothing when there is none; `$$` is a
/// `$`. A `$` not followed by a name stays as it is. Values are not expanded again.
pub fn expand(text: &str, variables: &[Variable]) -> String {
    if !text.contains('$') {
        return text.to_string();
    }
    let lookup = |name: &str| {
        variables
            .iter()
            .rev()
            .find(|v| v.key == name)
            .map_or("", |v| v.value.as_str())
    };
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

#[cfg(test)]
mod tests {
    use super::*;

    fn vars() -> Vec<Variable> {
        vec![
            Variable::new("REGISTRY", "first.local"),
            Variable::new("IMAGE_TAG", "3.20"),
            Variable::new("REGISTRY", "registry.local:5000"),
        ]
    }

    #[test]
    fn names_braces_and_dollars() {
        let v = vars();
        assert_eq!(
            expand("$REGISTRY/group/app:${IMAGE_TAG}", &v),
            "registry.local:5000/group/app:3.20"
        );
        assert_eq!(expand("alpine:${MISSING}x", &v), "alpine:x");
        assert_eq!(expand("a$$b", &v), "a$b");
        assert_eq!(expand("cost $ 5 $/", &v), "cost $ 5 $/");
        assert_eq!(expand("${IMAGE_TAG", &v), "");
        assert_eq!(expand("plain:1", &v), "plain:1");
    }
}
