//! The vocabulary of the key lists ([`super::schema`], [`super::autoscaler::schema`]): what
//! drover does with a key, a section's keys, and the `expect` texts type errors quote.

/// What drover does with a key.
#[derive(Copy, Clone, Debug)]
pub enum Rule {
    /// Read and acted on; `expect` says what it takes, for type-error hints.
    Read { expect: &'static str },
    /// A sub-section drover reads (a table, or an array of tables).
    Section(&'static Section),
    /// A GitLab Runner key drover accepts and ignores; named in one warning.
    Ignored,
    /// A key GitLab Runner itself no longer honours; `hint` says what replaced it.
    Deprecated { hint: &'static str },
}

#[derive(Copy, Clone, Debug)]
pub struct Key {
    pub name: &'static str,
    pub rule: Rule,
}

/// A section drover owns: a key not listed here is an error.
#[derive(Debug)]
pub struct Section {
    /// How the operator writes the section header, e.g. `[runners.machine]`.
    pub header: &'static str,
    pub keys: &'static [Key],
}

impl Section {
    pub fn key(&self, name: &str) -> Option<&'static Key> {
        self.keys.iter().find(|k| k.name == name)
    }

    /// The keys drover reads here, for hints.
    pub fn read_keys(&self) -> impl Iterator<Item = &'static str> + '_ {
        self.keys
            .iter()
            .filter(|k| !matches!(k.rule, Rule::Ignored | Rule::Deprecated { .. }))
            .map(|k| k.name)
    }
}

pub(in crate::config) const fn read(name: &'static str, expect: &'static str) -> Key {
    Key {
        name,
        rule: Rule::Read { expect },
    }
}

pub(in crate::config) const fn section(name: &'static str, section: &'static Section) -> Key {
    Key {
        name,
        rule: Rule::Section(section),
    }
}

pub(in crate::config) const fn ignored(name: &'static str) -> Key {
    Key {
        name,
        rule: Rule::Ignored,
    }
}

pub(in crate::config) const fn deprecated(name: &'static str, hint: &'static str) -> Key {
    Key {
        name,
        rule: Rule::Deprecated { hint },
    }
}

pub(in crate::config) const COUNT: &str = "a whole number, 0 or more";
pub(in crate::config) const COUNT_OR_UNLIMITED: &str = "a whole number, 0 or more (0 = unlimited)";
/// `IdleScaleFactor`, in `[runners.machine]` and its periods.
pub(in crate::config) const FACTOR: &str = "a float written with a decimal point, 0.0 or more, e.g. \
                      `IdleScaleFactor = 1.0` (GitLab Runner refuses `1` too)";
pub(in crate::config) const SECONDS: &str = "a whole number of seconds, 0 or more";
pub(in crate::config) const STRING: &str = "a string";
pub(in crate::config) const STRINGS: &str = "a list of strings, e.g. [\"a\", \"b\"]";
pub(in crate::config) const BOOL: &str = "true or false";
