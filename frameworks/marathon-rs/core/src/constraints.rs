//! Placement constraints (`[field, OPERATOR(, value)]`) with Marathon's exact
//! semantics: UNIQUE, CLUSTER, GROUP_BY, LIKE, UNLIKE, MAX_PER and IS, over
//! the agent's hostname (`hostname`/`@hostname`), region, zone or an
//! attribute. Each check is a pure function of the offer's agent and the
//! instances already placed; a "no" comes back as a reason.

use std::collections::BTreeMap;

use regex::Regex;

/// The agent facts constraints look at.
#[derive(Clone, Debug, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Placement {
    /// Agent hostname.
    pub hostname: String,
    /// Fault domain region, if any.
    pub region: Option<String>,
    /// Fault domain zone, if any.
    pub zone: Option<String>,
    /// Attributes, values in Mesos text form (`r1`, `2`, `[1-3]`, `{a, b}`).
    pub attributes: BTreeMap<String, String>,
}

impl Placement {
    /// The value of a constraint field on this agent.
    pub fn field(&self, field: &str) -> Option<String> {
        match field {
            "hostname" | "@hostname" => Some(self.hostname.clone()),
            "@region" => self.region.clone(),
            "@zone" => self.zone.clone(),
            other => self.attributes.get(other).cloned(),
        }
    }
}

/// The operators.
#[derive(Clone, Debug)]
pub enum Operator {
    /// One instance per value.
    Unique,
    /// All on one value (the given one, or the first used).
    Cluster(Option<String>),
    /// Spread evenly over values (waiting for at least n values).
    GroupBy(u32),
    /// Value matches the regex.
    Like(Regex),
    /// Value does not match the regex.
    Unlike(Regex),
    /// At most n instances per value.
    MaxPer(u32),
    /// Value equals.
    Is(String),
}

/// A parsed constraint.
#[derive(Clone, Debug)]
pub struct Constraint {
    /// The field.
    pub field: String,
    /// The operator and its argument.
    pub operator: Operator,
}

impl PartialEq for Operator {
    fn eq(&self, other: &Self) -> bool {
        use Operator::*;
        match (self, other) {
            (Unique, Unique) => true,
            (Cluster(a), Cluster(b)) => a == b,
            (GroupBy(a), GroupBy(b)) | (MaxPer(a), MaxPer(b)) => a == b,
            (Like(a), Like(b)) | (Unlike(a), Unlike(b)) => a.as_str() == b.as_str(),
            (Is(a), Is(b)) => a == b,
            _ => false,
        }
    }
}

/// Mesos' scalar text form: up to three decimals, trailing zeros dropped.
fn format_scalar(v: f64) -> String {
    let s = format!("{:.3}", v);
    let s = s.trim_end_matches('0').trim_end_matches('.');
    s.to_string()
}

/// Why a constraint is not valid (Marathon's messages).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConstraintError {
    /// Not `[field, OPERATOR]` or `[field, OPERATOR, value]`.
    #[error("Each constraint must have either 2 or 3 fields")]
    Fields,
    /// An empty field.
    #[error("Constraint field must not be empty")]
    EmptyField,
    /// An operator that needs a value has none.
    #[error("{0} requires a value")]
    MissingValue(&'static str),
    /// GROUP_BY or MAX_PER with something other than a count.
    #[error("{0} value must be a non-negative integer")]
    NotACount(&'static str),
    /// LIKE or UNLIKE with a bad pattern.
    #[error("'{pattern}' is not a valid regular expression: {message}")]
    BadPattern {
        /// The pattern.
        pattern: String,
        /// What the regex crate said.
        message: String,
    },
    /// UNIQUE with a value.
    #[error("UNIQUE does not take a value")]
    UniqueTakesNoValue,
    /// IS with a value that is no scalar, text or range.
    #[error("IS value must match ^[a-zA-Z0-9_/.-]*$")]
    BadIsValue,
    /// No such operator.
    #[error(
        "Constraint operator '{0}' must be one of the following UNIQUE, CLUSTER, GROUP_BY, LIKE, UNLIKE, MAX_PER or IS"
    )]
    UnknownOperator(String),
}

/// Why an agent does not satisfy a constraint (shown in `/v2/queue`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("constraint {field} {operator:?} not satisfied: {why}")]
pub struct Unsatisfied {
    /// The constraint's field.
    pub field: String,
    /// Its operator.
    pub operator: &'static str,
    /// What the agent or the placed instances have.
    pub why: String,
}

impl Constraint {
    /// Parses `[field, OPERATOR]` or `[field, OPERATOR, value]`.
    pub fn parse(parts: &[String]) -> Result<Constraint, ConstraintError> {
        if parts.len() < 2 || parts.len() > 3 {
            return Err(ConstraintError::Fields);
        }
        let field = parts[0].clone();
        if field.trim().is_empty() {
            return Err(ConstraintError::EmptyField);
        }
        let value = parts.get(2).cloned();
        let int = |what: &'static str| -> Result<u32, ConstraintError> {
            value
                .as_deref()
                .ok_or(ConstraintError::MissingValue(what))?
                .parse::<u32>()
                .map_err(|_| ConstraintError::NotACount(what))
        };
        let regex = |what: &'static str| -> Result<Regex, ConstraintError> {
            let v = value
                .as_deref()
                .ok_or(ConstraintError::MissingValue(what))?;
            Regex::new(&format!("^(?:{v})$")).map_err(|e| ConstraintError::BadPattern {
                pattern: v.to_string(),
                message: e.to_string(),
            })
        };
        let operator = match parts[1].as_str() {
            "UNIQUE" => {
                if value.is_some() {
                    return Err(ConstraintError::UniqueTakesNoValue);
                }
                Operator::Unique
            }
            "CLUSTER" => Operator::Cluster(value.filter(|v| !v.is_empty())),
            "GROUP_BY" => match value.as_deref() {
                None | Some("") => Operator::GroupBy(0),
                Some(_) => Operator::GroupBy(int("GROUP_BY")?),
            },
            "LIKE" => Operator::Like(regex("LIKE")?),
            "UNLIKE" => Operator::Unlike(regex("UNLIKE")?),
            "MAX_PER" => Operator::MaxPer(int("MAX_PER")?),
            "IS" => {
                let v = value.ok_or(ConstraintError::MissingValue("IS"))?;
                if !v
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "_/.-".contains(c))
                {
                    return Err(ConstraintError::BadIsValue);
                }
                Operator::Is(match v.parse::<f64>() {
                    Ok(f) if f.is_finite() => format_scalar(f),
                    _ => v,
                })
            }
            other => return Err(ConstraintError::UnknownOperator(other.to_string())),
        };
        Ok(Constraint { field, operator })
    }

    /// Whether an instance may go on `agent`, given where the app's other
    /// instances are. `Err` carries the reason (shown in `/v2/queue`).
    pub fn check(&self, agent: &Placement, placed: &[&Placement]) -> Result<(), Unsatisfied> {
        let value = agent.field(&self.field);
        let no = |why: String| {
            Err(Unsatisfied {
                field: self.field.clone(),
                operator: self.operator_name(),
                why,
            })
        };
        let Some(value) = value else {
            return match self.operator {
                Operator::Unlike(_) => Ok(()),
                _ => no(format!("agent {} has no '{}'", agent.hostname, self.field)),
            };
        };
        let values: Vec<String> = placed.iter().filter_map(|p| p.field(&self.field)).collect();
        match &self.operator {
            Operator::Unique => {
                if values.contains(&value) {
                    no(format!(
                        "an instance already runs where {} is {value}",
                        self.field
                    ))
                } else {
                    Ok(())
                }
            }
            Operator::Cluster(Some(v)) => {
                if &value == v {
                    Ok(())
                } else {
                    no(format!("{} is {value}, not {v}", self.field))
                }
            }
            Operator::Cluster(None) => match values.first() {
                None => Ok(()),
                Some(first) if *first == value => Ok(()),
                Some(first) => no(format!("instances cluster on {first}")),
            },
            Operator::Like(re) => {
                if re.is_match(&value) {
                    Ok(())
                } else {
                    no(format!("{value} does not match"))
                }
            }
            Operator::Unlike(re) => {
                if re.is_match(&value) {
                    no(format!("{value} matches"))
                } else {
                    Ok(())
                }
            }
            Operator::MaxPer(n) => {
                let count = values.iter().filter(|v| **v == value).count() as u32;
                if count < *n {
                    Ok(())
                } else {
                    no(format!(
                        "{count} instances already where {} is {value}",
                        self.field
                    ))
                }
            }
            Operator::GroupBy(min_groups) => {
                let mut groups: BTreeMap<&str, u32> = BTreeMap::new();
                for v in &values {
                    *groups.entry(v.as_str()).or_default() += 1;
                }
                if !groups.contains_key(value.as_str()) {
                    return Ok(());
                }
                let min = groups.values().copied().min().unwrap_or(0);
                let enough_groups = groups.len() as u32 >= *min_groups;
                if enough_groups && groups.get(value.as_str()).copied() == Some(min) {
                    Ok(())
                } else {
                    no(format!(
                        "spreading over {}: {value} already has its share",
                        self.field
                    ))
                }
            }
            Operator::Is(v) => {
                let normalized = match value.parse::<f64>() {
                    Ok(f) if f.is_finite() => format_scalar(f),
                    _ => value.clone(),
                };
                if &normalized == v {
                    Ok(())
                } else {
                    no(format!("{value} is not {v}"))
                }
            }
        }
    }

    fn operator_name(&self) -> &'static str {
        match self.operator {
            Operator::Unique => "UNIQUE",
            Operator::Cluster(_) => "CLUSTER",
            Operator::GroupBy(_) => "GROUP_BY",
            Operator::Like(_) => "LIKE",
            Operator::Unlike(_) => "UNLIKE",
            Operator::MaxPer(_) => "MAX_PER",
            Operator::Is(_) => "IS",
        }
    }
}

/// Checks every constraint (AND); the first failure's reason.
pub fn check_all(
    constraints: &[Constraint],
    agent: &Placement,
    placed: &[&Placement],
) -> Result<(), Unsatisfied> {
    for c in constraints {
        c.check(agent, placed)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn c(parts: &[&str]) -> Constraint {
        Constraint::parse(&parts.iter().map(|s| s.to_string()).collect::<Vec<_>>()).unwrap()
    }

    fn agent(host: &str, rack: &str) -> Placement {
        Placement {
            hostname: host.into(),
            attributes: [("rack".to_string(), rack.to_string())].into(),
            ..Default::default()
        }
    }

    #[test]
    fn parse_rules() {
        let p = |parts: &[&str]| {
            Constraint::parse(&parts.iter().map(|s| s.to_string()).collect::<Vec<_>>())
        };
        assert!(p(&["hostname", "UNIQUE"]).is_ok());
        assert!(p(&["hostname", "UNIQUE", "x"]).is_err());
        assert!(p(&["rack", "MAX_PER"]).is_err());
        assert!(p(&["rack", "MAX_PER", "two"]).is_err());
        assert!(p(&["rack", "LIKE", "r[12"]).is_err());
        assert!(
            p(&["rack", "SOMETIMES"])
                .unwrap_err()
                .to_string()
                .contains("must be one of")
        );
        assert_eq!(p(&["rack"]).unwrap_err(), ConstraintError::Fields);
        assert_eq!(p(&["", "UNIQUE"]).unwrap_err(), ConstraintError::EmptyField);
        assert_eq!(
            p(&["level", "IS", "a b"]).unwrap_err(),
            ConstraintError::BadIsValue
        );
        assert_eq!(
            p(&["level", "IS", "2.50"]).unwrap().operator,
            Operator::Is("2.5".into())
        );
    }

    #[test]
    fn unique_and_max_per() {
        let (a1, a2) = (agent("a1", "r1"), agent("a2", "r1"));
        assert!(c(&["hostname", "UNIQUE"]).check(&a1, &[&a2]).is_ok());
        assert!(c(&["hostname", "UNIQUE"]).check(&a1, &[&a1]).is_err());
        assert!(c(&["rack", "UNIQUE"]).check(&a1, &[&a2]).is_err());
        assert!(c(&["rack", "MAX_PER", "2"]).check(&a1, &[&a2]).is_ok());
        assert!(
            c(&["rack", "MAX_PER", "2"])
                .check(&a1, &[&a2, &a1])
                .is_err()
        );
    }

    #[test]
    fn cluster_like_unlike_is() {
        let (a1, a2) = (agent("a1", "r1"), agent("a2", "r2"));
        assert!(c(&["rack", "CLUSTER", "r1"]).check(&a1, &[]).is_ok());
        assert!(c(&["rack", "CLUSTER", "r1"]).check(&a2, &[]).is_err());
        assert!(c(&["rack", "CLUSTER"]).check(&a2, &[]).is_ok());
        assert!(c(&["rack", "CLUSTER"]).check(&a2, &[&a1]).is_err());
        assert!(c(&["hostname", "LIKE", "a[12]"]).check(&a1, &[]).is_ok());
        assert!(
            c(&["hostname", "LIKE", "a"]).check(&a1, &[]).is_err(),
            "full match only"
        );
        assert!(c(&["hostname", "UNLIKE", "a1"]).check(&a1, &[]).is_err());
        assert!(
            c(&["missing", "UNLIKE", "x"]).check(&a1, &[]).is_ok(),
            "absent field: only UNLIKE matches"
        );
        assert!(c(&["missing", "UNIQUE"]).check(&a1, &[]).is_err());
        assert!(c(&["rack", "IS", "r2"]).check(&a2, &[]).is_ok());
    }

    #[test]
    fn group_by_spreads_round_robin() {
        let (a1, a2, a3) = (agent("a1", "r1"), agent("a2", "r2"), agent("a3", "r3"));
        let g = c(&["rack", "GROUP_BY"]);
        // r1 has one, r2 none: r2 (new group) ok, r1 again not while r2's count is lower... min is r1's.
        assert!(g.check(&a2, &[&a1]).is_ok());
        assert!(
            g.check(&a1, &[&a1, &a2]).is_ok(),
            "both groups at the minimum"
        );
        assert!(g.check(&a1, &[&a1, &a1, &a2]).is_err(), "r1 is ahead of r2");
        // With 3 wanted groups, a second instance on r1 waits for r3.
        let g3 = c(&["rack", "GROUP_BY", "3"]);
        assert!(g3.check(&a1, &[&a1, &a2]).is_err());
        assert!(g3.check(&a3, &[&a1, &a2]).is_ok());
    }
}
