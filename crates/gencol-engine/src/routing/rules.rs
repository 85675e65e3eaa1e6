//! Filter rules (SPEC §11): groups of rules, a span forwarded when any group matches; a
//! group's rules combined with `and` or `or`. Read from YAML with serde for their shape,
//! then compiled once (regexes, numbers) with every error at its `FILE:LINE:COLUMN`.

use gencol_config::{Diagnostic, Located, Node};
use gencol_model::SpanItem;
use serde::Deserialize;

use super::fields::{Field, FieldValue, number_text};

/// `filter_rules:` as written.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct FilterRulesSettings {
    /// `false` forwards everything, as if the rules were not there.
    #[serde(default = "enabled")]
    pub enabled: bool,
    #[serde(default)]
    pub groups: Vec<GroupSettings>,
}

fn enabled() -> bool {
    true
}

#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct GroupSettings {
    #[serde(default)]
    pub logic: Logic,
    #[serde(default)]
    pub rules: Vec<RuleSettings>,
}

/// How a group's rules combine.
#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Logic {
    #[default]
    And,
    Or,
}

#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RuleSettings {
    pub field: String,
    pub operator: Operator,
    #[serde(default)]
    pub value: Option<serde_json::Value>,
}

/// The 13 operators of SPEC §11.
#[derive(Clone, Copy, Debug, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Operator {
    Equals,
    NotEquals,
    Contains,
    NotContains,
    Regex,
    StartsWith,
    EndsWith,
    Gt,
    Lt,
    Gte,
    Lte,
    Exists,
    NotExists,
}

impl Operator {
    fn name(self) -> &'static str {
        match self {
            Operator::Equals => "equals",
            Operator::NotEquals => "not_equals",
            Operator::Contains => "contains",
            Operator::NotContains => "not_contains",
            Operator::Regex => "regex",
            Operator::StartsWith => "starts_with",
            Operator::EndsWith => "ends_with",
            Operator::Gt => "gt",
            Operator::Lt => "lt",
            Operator::Gte => "gte",
            Operator::Lte => "lte",
            Operator::Exists => "exists",
            Operator::NotExists => "not_exists",
        }
    }

    /// What an absent field makes of the rule: false, except for the negative operators.
    fn when_absent(self) -> bool {
        matches!(self, Operator::NotEquals | Operator::NotContains | Operator::NotExists)
    }
}

/// What a rule compares with, checked and compiled at config load.
#[derive(Clone, Debug)]
enum Operand {
    None,
    Text(String),
    Number(f64),
    Pattern(regex::Regex),
}

/// One compiled rule.
#[derive(Clone, Debug)]
pub struct Rule {
    field: Field,
    operator: Operator,
    operand: Operand,
}

/// Compiled filter rules.
#[derive(Clone, Debug)]
pub struct FilterRules {
    groups: Vec<(Logic, Vec<Rule>)>,
}

impl Rule {
    pub fn matches(&self, item: &SpanItem) -> bool {
        let Some(value) = self.field.read(item) else {
            return self.operator.when_absent();
        };
        match (self.operator, &self.operand) {
            (Operator::Exists, _) => true,
            (Operator::NotExists, _) => false,
            (Operator::Equals, operand) => self.equals(&value, operand),
            (Operator::NotEquals, operand) => !self.equals(&value, operand),
            (Operator::Contains, Operand::Text(t)) => value.text().contains(t.as_str()),
            (Operator::NotContains, Operand::Text(t)) => !value.text().contains(t.as_str()),
            (Operator::StartsWith, Operand::Text(t)) => value.text().starts_with(t.as_str()),
            (Operator::EndsWith, Operand::Text(t)) => value.text().ends_with(t.as_str()),
            (Operator::Regex, Operand::Pattern(p)) => p.is_match(&value.text()),
            (Operator::Gt, Operand::Number(n)) => value.number().is_some_and(|v| v > *n),
            (Operator::Lt, Operand::Number(n)) => value.number().is_some_and(|v| v < *n),
            (Operator::Gte, Operand::Number(n)) => value.number().is_some_and(|v| v >= *n),
            (Operator::Lte, Operand::Number(n)) => value.number().is_some_and(|v| v <= *n),
            // Compiling pairs every operator with its operand; nothing else is built.
            _ => false,
        }
    }

    /// `equals`: numerically when both sides are numbers (always on a number field),
    /// else as text.
    fn equals(&self, value: &FieldValue<'_>, operand: &Operand) -> bool {
        match operand {
            Operand::Number(n) => value.number().is_some_and(|v| v == *n),
            Operand::Text(t) => value.text() == t.as_str(),
            Operand::None | Operand::Pattern(_) => false,
        }
    }
}

impl FilterRules {
    /// Whether `item` is forwarded: any group matches.
    pub fn matches(&self, item: &SpanItem) -> bool {
        self.groups.iter().any(|(logic, rules)| match logic {
            Logic::And => rules.iter().all(|r| r.matches(item)),
            Logic::Or => rules.iter().any(|r| r.matches(item)),
        })
    }

    /// Compiles `settings`, read from `node` (the `filter_rules` map, for locations).
    /// `None` when the rules are disabled (everything is forwarded). `what` names the
    /// setting in messages (`filter_rules`, or `groups` for the `filter` processor).
    pub fn compile(
        settings: &FilterRulesSettings,
        node: &Located<Node>,
        what: &str,
    ) -> Result<Option<FilterRules>, Vec<Diagnostic>> {
        if !settings.enabled {
            return Ok(None);
        }
        let groups_node = node.value.get("groups");
        if settings.groups.is_empty() {
            let loc = groups_node.map_or(&node.loc, |g| &g.loc);
            return Err(vec![Diagnostic::error(
                loc,
                format!(
                    "{what} has no groups, so nothing would be forwarded: add a group of rules, or remove {what} (or set `enabled: false`) to forward everything"
                ),
            )]);
        }
        let mut errors = Vec::new();
        let mut groups = Vec::new();
        for (g, group) in settings.groups.iter().enumerate() {
            let group_node = nth(groups_node, g).unwrap_or(node);
            let rules_node = group_node.value.get("rules");
            if group.rules.is_empty() {
                let loc = rules_node.map_or(&group_node.loc, |r| &r.loc);
                errors.push(Diagnostic::error(loc, format!("{what} group {} has no rules: add at least one", g + 1)));
                continue;
            }
            let mut rules = Vec::new();
            for (r, rule) in group.rules.iter().enumerate() {
                let rule_node = nth(rules_node, r).unwrap_or(group_node);
                match compile_rule(rule, rule_node) {
                    Ok(rule) => rules.push(rule),
                    Err(d) => errors.push(d),
                }
            }
            groups.push((group.logic, rules));
        }
        if errors.is_empty() { Ok(Some(FilterRules { groups })) } else { Err(errors) }
    }
}

fn nth(seq: Option<&Located<Node>>, i: usize) -> Option<&Located<Node>> {
    match &seq?.value {
        Node::Seq(items) => items.get(i),
        _ => None,
    }
}

/// Checks one rule's field, operator and value together.
fn compile_rule(rule: &RuleSettings, node: &Located<Node>) -> Result<Rule, Diagnostic> {
    let at = |key: &str| node.value.get(key).map_or(node.loc.clone(), |n| n.loc.clone());
    let field = Field::parse(&rule.field).map_err(|m| Diagnostic::error(&at("field"), m))?;
    let op = rule.operator;
    let value_node = node.value.get("value");
    let wrong = |expected: &str| {
        Diagnostic::error(&at("value"), format!("`{}` on `{}` takes {expected}", op.name(), rule.field))
    };
    let operand = match (op, value_node.map(|v| &v.value)) {
        (Operator::Exists | Operator::NotExists, None | Some(Node::Null)) => Operand::None,
        (Operator::Exists | Operator::NotExists, Some(_)) => {
            return Err(wrong("no `value`: remove it"));
        }
        (_, None | Some(Node::Null)) => {
            return Err(Diagnostic::error(&node.loc, format!("rule `{} {}` needs a `value`", rule.field, op.name())));
        }
        (Operator::Gt | Operator::Lt | Operator::Gte | Operator::Lte, Some(v)) => match number(v) {
            Some(n) => Operand::Number(n),
            None => return Err(wrong("a number as its `value` (without quotes)")),
        },
        (Operator::Equals | Operator::NotEquals, Some(v)) if field.is_number() => match number(v) {
            Some(n) => Operand::Number(n),
            None => return Err(wrong("a number as its `value` (it is a number field)")),
        },
        (Operator::Equals | Operator::NotEquals, Some(v)) => match v {
            Node::String(s) => Operand::Text(s.clone()),
            // Custom metadata may hold numbers: compared numerically when the field reads as one.
            Node::Int(_) | Node::Float(_) => Operand::Number(number(v).unwrap_or(f64::NAN)),
            Node::Bool(b) => Operand::Text(b.to_string()),
            _ => return Err(wrong("a single text or number as its `value`")),
        },
        (Operator::Regex, Some(Node::String(s))) => match regex::Regex::new(s) {
            Ok(p) => Operand::Pattern(p),
            Err(e) => {
                let first = e.to_string().lines().last().unwrap_or_default().trim().to_owned();
                return Err(Diagnostic::error(&at("value"), format!("invalid regex `{s}`: {first}")));
            }
        },
        (_, Some(Node::String(s))) => Operand::Text(s.clone()),
        (_, Some(Node::Int(_) | Node::Float(_))) if op != Operator::Regex => Operand::Text(
            number(value_node.map(|v| &v.value).unwrap_or(&Node::Null)).map(number_text).unwrap_or_default(),
        ),
        _ => return Err(wrong("text as its `value`")),
    };
    Ok(Rule { field, operator: op, operand })
}

fn number(node: &Node) -> Option<f64> {
    match node {
        Node::Int(i) => Some(*i as f64),
        Node::Float(f) => Some(*f),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use gencol_model::{GenerationContext, Origin, SpanItem, attributes};
    use opentelemetry_proto::tonic::trace::v1::Span;

    use super::*;

    fn rules(groups: &str) -> FilterRules {
        let yaml = format!("filter_rules:\n  groups: {groups}\n");
        let doc = gencol_config::load_str("t.yaml", &yaml, &|_| None).expect("yaml");
        let node = doc.value.get("filter_rules").expect("present");
        let settings: FilterRulesSettings = gencol_config::decode(node).expect("shape");
        FilterRules::compile(&settings, node, "filter_rules").expect("valid").expect("enabled")
    }

    #[test]
    fn fields_namespace_has_not_written_yet_are_read_from_the_record() {
        let ctx = GenerationContext {
            user: Some("qa-7".into()),
            session_id: Some("s-1".into()),
            metadata: vec![("tier".into(), serde_json::json!(3))],
            ..Default::default()
        };
        let item = SpanItem {
            origin: Arc::new(Origin::default()),
            span: Span { attributes: vec![attributes::string("gen_ai.request.model", "m")], ..Default::default() },
            generation: Some(Arc::new(ctx)),
        };
        assert!(rules("[{rules: [{field: user_id, operator: starts_with, value: qa-}]}]").matches(&item));
        assert!(rules("[{rules: [{field: session_id, operator: equals, value: s-1}]}]").matches(&item));
        // A number in custom metadata compares numerically with a number, as text with text.
        assert!(rules("[{rules: [{field: metadata.tier, operator: equals, value: 3}]}]").matches(&item));
        assert!(rules("[{rules: [{field: metadata.tier, operator: equals, value: \"3\"}]}]").matches(&item));
        assert!(rules("[{rules: [{field: metadata.tier, operator: gt, value: 2.5}]}]").matches(&item));
        assert!(!rules("[{rules: [{field: metadata.other, operator: exists}]}]").matches(&item));
        assert!(rules("[{rules: [{field: metadata.other, operator: not_exists}]}]").matches(&item));
    }
}
