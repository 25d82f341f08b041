//! `$VAR` expansion of job-payload values (image and service names, aliases) against the job's
//! variables, as GitLab Runner expands them (Go's `os.Expand`).

use drover_docker::Variable;

/// [`drover_docker::expand::expand`] over `variables`: the last variable of a name wins, as in the
/// job's environment.
pub fn expand(text: &str, variables: &[Variable]) -> String {
    drover_docker::expand::expand(text, |name| {
        variables
            .iter()
            .rev()
            .find(|v| v.key == name)
            .map(|v| v.value.as_str())
    })
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
