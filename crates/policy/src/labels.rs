//! Labels and label selectors (`matchLabels` and `matchExpressions`).

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::Error;

/// A label set: key to value.
pub type Labels = BTreeMap<String, String>;

/// Operator of a selector requirement.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Operator {
    /// The label's value is one of `values`.
    In,
    /// The label is absent or its value is none of `values`.
    NotIn,
    /// The label is present.
    Exists,
    /// The label is absent.
    DoesNotExist,
}

impl FromStr for Operator {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "In" => Ok(Operator::In),
            "NotIn" => Ok(Operator::NotIn),
            "Exists" => Ok(Operator::Exists),
            "DoesNotExist" => Ok(Operator::DoesNotExist),
            other => Err(format!(
                "unknown operator {other:?} (expected In, NotIn, Exists or DoesNotExist)"
            )),
        }
    }
}

impl fmt::Display for Operator {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self, f)
    }
}

/// One `matchExpressions` requirement.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Requirement {
    /// The label key.
    pub key: String,
    /// The operator.
    pub operator: Operator,
    /// The values (non-empty for `In`/`NotIn`, empty for `Exists`/`DoesNotExist`).
    pub values: Vec<String>,
}

impl Requirement {
    /// Whether `labels` satisfy the requirement.
    pub fn matches(&self, labels: &Labels) -> bool {
        let value = labels.get(&self.key);
        match self.operator {
            Operator::In => value.is_some_and(|v| self.values.contains(v)),
            Operator::NotIn => !value.is_some_and(|v| self.values.contains(v)),
            Operator::Exists => value.is_some(),
            Operator::DoesNotExist => value.is_none(),
        }
    }
}

/// A label selector; all of its terms must hold. The empty selector selects everything.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct LabelSelector {
    /// Labels that must be present with these values.
    pub match_labels: Labels,
    /// Further requirements.
    pub match_expressions: Vec<Requirement>,
}

impl LabelSelector {
    /// The selector that selects everything (`{}`).
    pub fn everything() -> Self {
        Self::default()
    }

    /// A selector of `matchLabels` only.
    pub fn labels<'a>(pairs: impl IntoIterator<Item = (&'a str, &'a str)>) -> Self {
        LabelSelector {
            match_labels: pairs
                .into_iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            match_expressions: Vec::new(),
        }
    }

    /// Whether the selector is empty (selects everything).
    pub fn is_everything(&self) -> bool {
        self.match_labels.is_empty() && self.match_expressions.is_empty()
    }

    /// Whether `labels` are selected.
    pub fn matches(&self, labels: &Labels) -> bool {
        self.match_labels
            .iter()
            .all(|(k, v)| labels.get(k) == Some(v))
            && self.match_expressions.iter().all(|r| r.matches(labels))
    }

    /// Checks the operators' value counts; `object` and `field` locate the error.
    pub fn validate(&self, object: &str, field: &str) -> Result<(), Error> {
        for (i, r) in self.match_expressions.iter().enumerate() {
            let bad = match r.operator {
                Operator::In | Operator::NotIn if r.values.is_empty() => {
                    Some(format!("operator {} needs at least one value", r.operator))
                }
                Operator::Exists | Operator::DoesNotExist if !r.values.is_empty() => {
                    Some(format!("operator {} takes no values", r.operator))
                }
                _ => None,
            };
            if let Some(reason) = bad {
                return Err(Error::Invalid {
                    object: object.to_string(),
                    field: format!("{field}.matchExpressions[{i}]"),
                    reason,
                });
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(pairs: &[(&str, &str)]) -> Labels {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn operators() {
        let l = labels(&[("app", "web"), ("tier", "front")]);
        let req = |key: &str, operator, values: &[&str]| Requirement {
            key: key.into(),
            operator,
            values: values.iter().map(|s| s.to_string()).collect(),
        };
        assert!(req("app", Operator::In, &["web", "db"]).matches(&l));
        assert!(!req("app", Operator::In, &["db"]).matches(&l));
        assert!(req("app", Operator::NotIn, &["db"]).matches(&l));
        assert!(req("missing", Operator::NotIn, &["db"]).matches(&l));
        assert!(!req("app", Operator::NotIn, &["web"]).matches(&l));
        assert!(req("tier", Operator::Exists, &[]).matches(&l));
        assert!(!req("tier", Operator::DoesNotExist, &[]).matches(&l));
        assert!(req("x", Operator::DoesNotExist, &[]).matches(&l));
        assert!(LabelSelector::everything().matches(&Labels::new()));
        assert!(LabelSelector::labels([("app", "web")]).matches(&l));
        assert!(!LabelSelector::labels([("app", "web"), ("x", "y")]).matches(&l));
        assert!("Maybe".parse::<Operator>().is_err());
        let bad = LabelSelector {
            match_labels: Labels::new(),
            match_expressions: vec![req("a", Operator::In, &[])],
        };
        assert!(
            bad.validate("NetworkPolicy a/b", "spec.podSelector")
                .is_err()
        );
    }
}
