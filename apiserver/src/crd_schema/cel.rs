//! CEL validation rules (`x-kubernetes-validations`) evaluated as kube's
//! apiextensions-apiserver evaluates them (`pkg/apiserver/schema/cel`),
//! on the `cel-interpreter` crate.
//!
//! - At CRD time ([`check_rules`]) every rule and `messageExpression`
//!   parses and names only variables in scope (`self`, `oldSelf`, macro
//!   variables) and functions this module knows; `reason`, `fieldPath`,
//!   `message` and `optionalOldSelf` are checked as kube checks them; a
//!   transition rule (one using `oldSelf`) is refused below a list that is
//!   not `x-kubernetes-list-type: map`, where no old item corresponds.
//! - Kubernetes library functions this module does not implement
//!   ([`UNSUPPORTED`]: quantities, IPs, CIDRs, URLs, semver, timestamps…)
//!   do not refuse the CRD, as kube accepts them: such a rule is stored
//!   but not evaluated, and [`unevaluated_rules`] words the `Warning`.
//! - On a write ([`Rules::validate`]) each rule runs with `self` bound to
//!   its node (typed by the schema: `integer` → int, `number` → double,
//!   int-or-string → int or string, properties escaped as kube escapes
//!   them, the resource root's `metadata` reduced to `name` and
//!   `generateName`), for every list item and map value below. A rule
//!   using `oldSelf` runs only on updates where an old value corresponds
//!   (same property, same key of a granular map, same keys of a map-type
//!   list), unless `optionalOldSelf` makes `oldSelf` an optional.
//! - Cost: each rule costs its node count plus, per macro iteration, the
//!   nodes of the loop body; one rule may cost kube's `PerCallLimit`
//!   (1 000 000), one write kube's `RuntimeCELCostBudget` (10 000 000).
//!   Past either, evaluation stops with kube's message.
//!
//! Failures read as kube's: `spec: Invalid value: "object": <message>`,
//! `failed rule: <rule>` without a message, the rule's `reason` choosing
//! `Forbidden`/`Required`/`Duplicate`, its `fieldPath` the reported field.

use std::collections::HashMap;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use cel_interpreter::extractors::This;
use cel_interpreter::objects::{Key, Map};
use cel_interpreter::{Context, ExecutionError, FunctionContext, Value as Cel};
use cel_parser::ast::{CallExpr, Expr, IdedExpr};
use cel_parser::reference::Val;
use serde_json::Value;

use super::{cause, child, forbidden, invalid, not_supported, required};
use crate::error::Cause;

/// kube's `PerCallLimit`: the most one evaluation of one rule may cost.
const PER_CALL_LIMIT: u64 = 1_000_000;
/// kube's `RuntimeCELCostBudget`: the most the rules of one write may cost.
const REQUEST_BUDGET: u64 = 10_000_000;
/// kube's `MaxEvaluatedMessageExpressionSizeBytes`.
const MAX_MESSAGE_BYTES: usize = 5 * 1024;

/// Functions a rule may call, beyond the operators (the macros `has`,
/// `all`, `exists`, `exists_one`, `map` and `filter` are expanded by the
/// parser).
const FUNCTIONS: &[&str] = &[
    "size",
    "contains",
    "startsWith",
    "endsWith",
    "matches",
    "string",
    "bytes",
    "double",
    "int",
    "uint",
    "dyn",
    "min",
    "max",
    "sum",
    "isSorted",
    "indexOf",
    "lastIndexOf",
    "lowerAscii",
    "upperAscii",
    "trim",
    "replace",
    "split",
    "substring",
    "charAt",
    "join",
    "find",
    "findAll",
    "hasValue",
    "value",
    "orValue",
];

/// Kubernetes CEL library functions and namespaces not implemented here:
/// a rule using one is stored but not evaluated.
const UNSUPPORTED: &[&str] = &[
    "quantity",
    "isQuantity",
    "isLessThan",
    "isGreaterThan",
    "compareTo",
    "add",
    "sub",
    "asInteger",
    "asApproximateFloat",
    "sign",
    "isInteger",
    "ip",
    "isIP",
    "cidr",
    "isCIDR",
    "family",
    "isUnspecified",
    "isLoopback",
    "isLinkLocalMulticast",
    "isLinkLocalUnicast",
    "isGlobalUnicast",
    "containsIP",
    "containsCIDR",
    "prefixLength",
    "masked",
    "isCanonical",
    "url",
    "isURL",
    "getScheme",
    "getHost",
    "getHostname",
    "getPort",
    "getEscapedPath",
    "getQuery",
    "semver",
    "isSemver",
    "major",
    "minor",
    "patch",
    "timestamp",
    "duration",
    "getFullYear",
    "getMonth",
    "getDayOfYear",
    "getDayOfMonth",
    "getDate",
    "getDayOfWeek",
    "getHours",
    "getMinutes",
    "getSeconds",
    "getMilliseconds",
    "type",
    "format",
    "quote",
    "reverse",
    "slice",
    "flatten",
    "distinct",
    "sort",
    "sortBy",
    "optional",
    "sets",
    "lists",
    "strings",
    "base64",
    "math",
];

const RESERVED: &[&str] = &[
    "true",
    "false",
    "null",
    "in",
    "as",
    "break",
    "const",
    "continue",
    "else",
    "for",
    "function",
    "if",
    "import",
    "let",
    "loop",
    "package",
    "namespace",
    "return",
    "var",
    "void",
    "while",
];

/// The `reason` a failed rule reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Reason {
    Invalid,
    Forbidden,
    Required,
    Duplicate,
}

const REASONS: &[&str] = &[
    "FieldValueDuplicate",
    "FieldValueForbidden",
    "FieldValueInvalid",
    "FieldValueRequired",
];

fn reason(text: &str) -> Option<Reason> {
    Some(match text {
        "FieldValueInvalid" => Reason::Invalid,
        "FieldValueForbidden" => Reason::Forbidden,
        "FieldValueRequired" => Reason::Required,
        "FieldValueDuplicate" => Reason::Duplicate,
        _ => return None,
    })
}

/// One rule, ready to run.
#[derive(Debug)]
struct Rule {
    /// `rule`, trimmed: what `failed rule:` names.
    text: String,
    /// `message`, trimmed, if given.
    message: Option<String>,
    program: IdedExpr,
    /// `messageExpression`: its source (for kube's messages) and program.
    message_expression: Option<(String, IdedExpr)>,
    uses_old_self: bool,
    optional_old_self: bool,
    reason: Reason,
    /// The normalized `fieldPath` (`foo.bar`, `foo[key]`), empty for none.
    field_path: String,
    /// Node count of `program`, charged once per evaluation.
    base_cost: u64,
}

impl Rule {
    /// kube's `ruleErrorString`: the message if any, else the rule.
    fn shown(&self) -> &str {
        self.message.as_deref().unwrap_or(&self.text)
    }
}

/// A parsed rule: ready, using functions not implemented here, or broken.
enum Compiled {
    Ready(Box<Rule>),
    Unsupported(Vec<String>),
    Failed(Vec<Cause>),
}

/// The compiled rules of a schema node and of the nodes below it that
/// have any.
#[derive(Debug)]
pub(super) struct Rules {
    /// The schema node (types for `self`).
    node: Value,
    /// The root of a custom resource or of an embedded resource.
    resource: bool,
    rules: Vec<Rule>,
    properties: Vec<(String, Rules)>,
    items: Option<Box<Rules>>,
    additional: Option<Box<Rules>>,
}

impl Rules {
    /// The rules of `root` (a stored, so checked, schema); `None` when it
    /// has none to evaluate.
    pub(super) fn new(root: &Value) -> Option<Rules> {
        build(root, true)
    }

    /// Every rule that fails on `obj` (`old` on updates), as 422 causes.
    pub(super) fn validate(&self, obj: &Value, old: Option<&Value>) -> Vec<Cause> {
        let mut run = Run::new();
        let mut out = Vec::new();
        run.node(self, "", obj, old, false, &mut out);
        out
    }
}

fn build(node: &Value, resource: bool) -> Option<Rules> {
    let rules: Vec<Rule> = node["x-kubernetes-validations"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|r| match compile(node, r) {
            Compiled::Ready(rule) => Some(*rule),
            _ => None,
        })
        .collect();
    let properties: Vec<(String, Rules)> = node["properties"]
        .as_object()
        .into_iter()
        .flatten()
        .filter_map(|(k, sub)| {
            let embedded = sub["x-kubernetes-embedded-resource"] == true;
            build(sub, embedded).map(|r| (k.clone(), r))
        })
        .collect();
    let below = |key: &str| {
        node.get(key)
            .filter(|n| n.is_object())
            .and_then(|n| build(n, n["x-kubernetes-embedded-resource"] == true).map(Box::new))
    };
    let items = below("items");
    let additional = below("additionalProperties");
    if rules.is_empty() && properties.is_empty() && items.is_none() && additional.is_none() {
        return None;
    }
    Some(Rules {
        node: node.clone(),
        resource,
        rules,
        properties,
        items,
        additional,
    })
}

// ---------------------------------------------------------------------------
// CRD time

/// Every error of the rules in the schema `root` at `path`
/// (`spec.versions[0].schema.openAPIV3Schema`), as kube words them.
pub fn check_rules(root: &Value, path: &str, out: &mut Vec<Cause>) {
    check_node(root, path, None, out);
}

fn check_node(node: &Value, path: &str, uncorrelatable: Option<&str>, out: &mut Vec<Cause>) {
    if !node.is_object() {
        return;
    }
    for (i, rule) in node["x-kubernetes-validations"]
        .as_array()
        .into_iter()
        .flatten()
        .enumerate()
    {
        let at = format!("{path}.x-kubernetes-validations[{i}]");
        if rule["rule"].as_str().is_none_or(|r| r.trim().is_empty()) {
            continue; // the structural check reports it
        }
        match compile(node, rule) {
            Compiled::Failed(causes) => out.extend(causes.into_iter().map(|mut c| {
                c.field = format!("{at}.{}", c.field);
                c
            })),
            Compiled::Ready(r) if r.uses_old_self => {
                if let Some(within) = uncorrelatable {
                    out.push(invalid(
                        &format!("{at}.rule"),
                        &Value::String(r.text.clone()),
                        &format!("oldSelf cannot be used on the uncorrelatable portion of the schema within {within}"),
                    ));
                }
            }
            _ => {}
        }
    }
    for (name, sub) in node["properties"].as_object().into_iter().flatten() {
        check_node(
            sub,
            &format!("{path}.properties[{name}]"),
            uncorrelatable,
            out,
        );
    }
    if let Some(items) = node.get("items") {
        let items_path = format!("{path}.items");
        let keyed = node["x-kubernetes-list-type"] == "map";
        let within = uncorrelatable
            .map(str::to_string)
            .or((!keyed).then(|| items_path.clone()));
        check_node(items, &items_path, within.as_deref(), out);
    }
    if let Some(more) = node.get("additionalProperties") {
        let atomic = node["x-kubernetes-map-type"] == "atomic";
        let more_path = format!("{path}.additionalProperties");
        let within = uncorrelatable
            .map(str::to_string)
            .or(atomic.then(|| more_path.clone()));
        check_node(more, &more_path, within.as_deref(), out);
    }
}

/// The rules kube would evaluate that this apiserver cannot: one line per
/// rule using a function it does not implement.
pub fn unevaluated_rules(root: &Value, path: &str) -> Vec<String> {
    let mut out = Vec::new();
    super::each_node(root, &mut |n| {
        for r in n["x-kubernetes-validations"]
            .as_array()
            .into_iter()
            .flatten()
        {
            if let Compiled::Unsupported(names) = compile(n, r) {
                out.push(format!(
                    "{path}: x-kubernetes-validations rule {:?} is stored but not evaluated: this apiserver does not implement the CEL function(s) {}",
                    r["rule"].as_str().unwrap_or_default().trim(),
                    names.join(", ")
                ));
            }
        }
    });
    out
}

/// A rule as kube prints its `ValidationRule` in `Invalid value:`.
fn go_rule(rule: &Value) -> String {
    let s = |k: &str| format!("{:?}", rule[k].as_str().unwrap_or_default());
    let reason = match rule["reason"].as_str() {
        Some(r) => format!("(*apiextensions.FieldValueErrorReason)({r:?})"),
        None => "(*apiextensions.FieldValueErrorReason)(nil)".into(),
    };
    let optional = match rule["optionalOldSelf"].as_bool() {
        Some(b) => format!("(*bool)({b})"),
        None => "(*bool)(nil)".into(),
    };
    format!(
        "apiextensions.ValidationRule{{Rule:{}, Message:{}, MessageExpression:{}, Reason:{reason}, FieldPath:{}, OptionalOldSelf:{optional}}}",
        s("rule"),
        s("message"),
        s("messageExpression"),
        s("fieldPath"),
    )
}

fn invalid_rule(field: &str, rule: &Value, detail: &str) -> Cause {
    cause(
        field,
        "FieldValueInvalid",
        format!("Invalid value: {}: {detail}", go_rule(rule)),
    )
}

/// Parses and checks one rule of `node`.
fn compile(node: &Value, rule: &Value) -> Compiled {
    let text = rule["rule"].as_str().unwrap_or_default().trim().to_string();
    let mut errors = Vec::new();
    let mut unsupported = Vec::new();
    let program = match parse(&text, &mut unsupported) {
        Ok(p) => Some(p),
        Err(e) => {
            errors.push(invalid_rule(
                "rule",
                rule,
                &format!("compilation failed: {e}"),
            ));
            None
        }
    };
    let message_expression = match rule["messageExpression"].as_str() {
        Some(m) if !m.trim().is_empty() => match parse(m.trim(), &mut unsupported) {
            Ok(p) => Some(p),
            Err(e) => {
                errors.push(invalid_rule(
                    "messageExpression",
                    rule,
                    &format!("messageExpression compilation failed: {e}"),
                ));
                None
            }
        },
        Some(_) => {
            errors.push(required(
                "messageExpression",
                "messageExpression must be non-empty if specified",
            ));
            None
        }
        None => None,
    };
    let message = rule["message"].as_str();
    if let Some(m) = message {
        if m.trim().is_empty() {
            errors.push(invalid(
                "message",
                &rule["message"],
                "message must be non-empty if specified",
            ));
        } else if m.contains('\n') {
            errors.push(invalid(
                "message",
                &rule["message"],
                "message must not contain line breaks",
            ));
        }
    } else if text.contains('\n') {
        errors.push(required(
            "message",
            "message must be specified if rule contains line breaks",
        ));
    }
    let reason_value = match rule.get("reason").and_then(Value::as_str) {
        None => Reason::Invalid,
        Some(r) => reason(r).unwrap_or_else(|| {
            let supported: Vec<String> = REASONS.iter().map(|s| s.to_string()).collect();
            errors.push(not_supported("reason", &rule["reason"], &supported));
            Reason::Invalid
        }),
    };
    let field_path = match rule["fieldPath"].as_str() {
        Some(p) if !p.is_empty() => match normalized_field_path(p, node) {
            Ok(n) => n,
            Err(e) => {
                errors.push(invalid(
                    "fieldPath",
                    &rule["fieldPath"],
                    &format!("fieldPath must be a valid path: {e}"),
                ));
                String::new()
            }
        },
        _ => String::new(),
    };
    let uses_old_self = program.as_ref().is_some_and(|p| mentions(p, "oldSelf"));
    let optional_old_self = rule["optionalOldSelf"] == true;
    if optional_old_self && program.is_some() && !uses_old_self {
        errors.push(invalid(
            "optionalOldSelf",
            &rule["optionalOldSelf"],
            "may not be set if oldSelf is not used in rule",
        ));
    }
    if !errors.is_empty() {
        return Compiled::Failed(errors);
    }
    if !unsupported.is_empty() {
        unsupported.sort();
        unsupported.dedup();
        return Compiled::Unsupported(unsupported);
    }
    let Some(program) = program else {
        return Compiled::Failed(Vec::new());
    };
    let base_cost = nodes(&program);
    Compiled::Ready(Box::new(Rule {
        message: message.map(|m| m.trim().to_string()),
        text,
        program: metered(program),
        message_expression: message_expression.map(|m| {
            let source = rule["messageExpression"].as_str().unwrap_or_default();
            (source.trim().to_string(), metered(m))
        }),
        uses_old_self,
        optional_old_self,
        reason: reason_value,
        field_path,
        base_cost,
    }))
}

/// Parses `source` and checks what it names: unknown variables and
/// functions fail as cel-go's checker words them; Kubernetes library
/// functions not implemented here go to `unsupported`.
fn parse(source: &str, unsupported: &mut Vec<String>) -> Result<IdedExpr, String> {
    // The ANTLR runtime panics on some malformed input (`self.a >`)
    // instead of reporting it.
    let parsed = catch_unwind(|| {
        cel_parser::Parser::default()
            .parse(source)
            .map_err(|e| e.to_string())
    });
    let ast = match parsed {
        Ok(result) => result?,
        Err(_) => return Err("ERROR: <input>: Syntax error: malformed expression".into()),
    };
    let mut scope = vec!["self".to_string(), "oldSelf".to_string()];
    names(&ast, &mut scope, unsupported)?;
    Ok(ast)
}

fn undeclared(name: &str) -> String {
    format!("ERROR: <input>: undeclared reference to '{name}' (in container '')")
}

fn is_operator(name: &str) -> bool {
    name.starts_with('_') || name.starts_with('@') || name == "!_" || name == "-_"
}

fn names(
    e: &IdedExpr,
    scope: &mut Vec<String>,
    unsupported: &mut Vec<String>,
) -> Result<(), String> {
    match &e.expr {
        Expr::Ident(name) => {
            if UNSUPPORTED.contains(&name.as_str()) {
                unsupported.push(name.clone());
            } else if !scope.iter().any(|s| s == name) {
                return Err(undeclared(name));
            }
        }
        Expr::Call(CallExpr {
            func_name,
            target,
            args,
        }) => {
            if UNSUPPORTED.contains(&func_name.as_str()) {
                unsupported.push(func_name.clone());
            } else if func_name == "_?._" || func_name == "_[?_]" {
                unsupported.push("optional".to_string());
            } else if !is_operator(func_name) && !FUNCTIONS.contains(&func_name.as_str()) {
                return Err(undeclared(func_name));
            }
            if let Some(t) = target {
                names(t, scope, unsupported)?;
            }
            for a in args {
                names(a, scope, unsupported)?;
            }
        }
        Expr::Select(s) => names(&s.operand, scope, unsupported)?,
        Expr::List(l) => {
            for item in &l.elements {
                names(item, scope, unsupported)?;
            }
        }
        Expr::Map(m) => {
            for entry in &m.entries {
                match &entry.expr {
                    cel_parser::ast::EntryExpr::MapEntry(me) if !me.optional => {
                        names(&me.key, scope, unsupported)?;
                        names(&me.value, scope, unsupported)?;
                    }
                    _ => unsupported.push("optional".to_string()),
                }
            }
        }
        Expr::Comprehension(c) => {
            names(&c.iter_range, scope, unsupported)?;
            names(&c.accu_init, scope, unsupported)?;
            let depth = scope.len();
            scope.push(c.iter_var.clone());
            scope.push(c.accu_var.clone());
            let inner = names(&c.loop_cond, scope, unsupported)
                .and_then(|_| names(&c.loop_step, scope, unsupported))
                .and_then(|_| names(&c.result, scope, unsupported));
            scope.truncate(depth);
            inner?;
        }
        Expr::Literal(_) => {}
        Expr::Struct(s) => return Err(undeclared(&s.type_name)),
        Expr::Unspecified => return Err("ERROR: <input>: unspecified expression".into()),
    }
    Ok(())
}

/// Whether `e` names the variable `var`.
fn mentions(e: &IdedExpr, var: &str) -> bool {
    let mut found = false;
    visit(e, &mut |x| {
        found |= matches!(&x.expr, Expr::Ident(n) if n == var)
    });
    found
}

fn nodes(e: &IdedExpr) -> u64 {
    let mut n = 0;
    visit(e, &mut |_| n += 1);
    n
}

fn visit(e: &IdedExpr, f: &mut impl FnMut(&IdedExpr)) {
    f(e);
    match &e.expr {
        Expr::Call(c) => {
            if let Some(t) = &c.target {
                visit(t, f);
            }
            c.args.iter().for_each(|a| visit(a, f));
        }
        Expr::Select(s) => visit(&s.operand, f),
        Expr::List(l) => l.elements.iter().for_each(|a| visit(a, f)),
        Expr::Map(m) => {
            for entry in &m.entries {
                if let cel_parser::ast::EntryExpr::MapEntry(me) = &entry.expr {
                    visit(&me.key, f);
                    visit(&me.value, f);
                }
            }
        }
        Expr::Comprehension(c) => {
            for sub in [
                &c.iter_range,
                &c.accu_init,
                &c.loop_cond,
                &c.loop_step,
                &c.result,
            ] {
                visit(sub, f);
            }
        }
        Expr::Ident(_) | Expr::Literal(_) | Expr::Struct(_) | Expr::Unspecified => {}
    }
}

fn call(name: &str, args: Vec<IdedExpr>) -> IdedExpr {
    IdedExpr {
        id: 0,
        expr: Expr::Call(CallExpr {
            func_name: name.to_string(),
            target: None,
            args,
        }),
    }
}

/// `e` with every macro loop metered: its range checked to be a list or
/// a map (`@range`), each iteration charged its body's node count
/// (`@cost`) before it runs.
fn metered(mut e: IdedExpr) -> IdedExpr {
    meter_in_place(&mut e);
    e
}

fn meter_in_place(e: &mut IdedExpr) {
    match &mut e.expr {
        Expr::Call(c) => {
            if let Some(t) = c.target.as_mut() {
                meter_in_place(t);
            }
            c.args.iter_mut().for_each(meter_in_place);
        }
        Expr::Select(s) => meter_in_place(&mut s.operand),
        Expr::List(l) => l.elements.iter_mut().for_each(meter_in_place),
        Expr::Map(m) => {
            for entry in &mut m.entries {
                if let cel_parser::ast::EntryExpr::MapEntry(me) = &mut entry.expr {
                    meter_in_place(&mut me.key);
                    meter_in_place(&mut me.value);
                }
            }
        }
        Expr::Comprehension(c) => {
            for sub in [
                &mut c.iter_range,
                &mut c.accu_init,
                &mut c.loop_cond,
                &mut c.loop_step,
                &mut c.result,
            ] {
                meter_in_place(sub);
            }
            let per_iteration = nodes(&c.loop_cond) + nodes(&c.loop_step) + 1;
            let range = std::mem::replace(&mut *c.iter_range, call("@range", Vec::new()));
            *c.iter_range = call("@range", vec![range]);
            let cond = std::mem::replace(&mut *c.loop_cond, call("@range", Vec::new()));
            let charge = IdedExpr {
                id: 0,
                expr: Expr::Literal(Val::Int(per_iteration as i64)),
            };
            *c.loop_cond = call("_&&_", vec![call("@cost", vec![charge]), cond]);
        }
        Expr::Ident(_) | Expr::Literal(_) | Expr::Struct(_) | Expr::Unspecified => {}
    }
}

/// kube's `ValidFieldPath` over `node`: `.a.b`, `.a['b.c']`; the path
/// normalized as kube's `field.Path` prints it (`a.b`, `a[b.c]` under a
/// map).
fn normalized_field_path(path: &str, node: &Value) -> Result<String, String> {
    let mut out = String::new();
    let mut schema = node;
    let mut rest = path;
    while !rest.is_empty() {
        let (name, after) = if let Some(r) = rest.strip_prefix('.') {
            let end = r.find(['.', '[']).unwrap_or(r.len());
            if end == 0 {
                return Err("unexpected end of JSON path".into());
            }
            (r[..end].to_string(), &r[end..])
        } else if let Some(r) = rest.strip_prefix("['") {
            let end = r.find("']").ok_or("unexpected end of JSON path")?;
            (r[..end].replace("\\'", "'"), &r[end + 2..])
        } else {
            let token: String = rest
                .chars()
                .take_while(|c| !matches!(c, '.' | '['))
                .collect();
            return Err(format!(
                "expected [ or . but got: {}",
                if token.is_empty() { rest } else { &token }
            ));
        };
        if let Some(sub) = schema["properties"].as_object().and_then(|p| p.get(&name)) {
            out = child(&out, &name);
            schema = sub;
        } else if schema["properties"].is_object() {
            return Err("does not refer to a valid field".into());
        } else if let Some(sub) = schema.get("additionalProperties").filter(|a| a.is_object()) {
            out = format!("{out}[{name}]");
            schema = sub;
        } else {
            return Err("does not refer to a valid field".into());
        }
        rest = after;
    }
    Ok(out)
}

// ---------------------------------------------------------------------------
// Values

/// A property name as CEL sees it (kube's `cel.Escape`); `None` when it
/// cannot be named.
fn escape(name: &str) -> Option<String> {
    if RESERVED.contains(&name) {
        return Some(format!("__{name}__"));
    }
    let first = name.chars().next()?;
    let fine = |c: char| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-' | '/');
    if !(first.is_ascii_alphabetic() || first == '_') || !name.chars().all(fine) {
        return None;
    }
    Some(
        name.replace("__", "__underscores__")
            .replace('.', "__dot__")
            .replace('-', "__dash__")
            .replace('/', "__slash__"),
    )
}

fn cel_map(entries: impl IntoIterator<Item = (String, Cel)>) -> Cel {
    let map: HashMap<Key, Cel> = entries
        .into_iter()
        .map(|(k, v)| (Key::String(Arc::new(k)), v))
        .collect();
    Cel::Map(Map { map: Arc::new(map) })
}

/// `v` as a CEL value typed by its schema `node`.
fn to_cel(node: &Value, v: &Value, resource: bool) -> Cel {
    match v {
        Value::Null => Cel::Null,
        Value::Bool(b) => Cel::Bool(*b),
        Value::Number(n) => {
            let integer = node["type"] == "integer" || node["x-kubernetes-int-or-string"] == true;
            match (n.as_i64(), n.as_f64()) {
                (Some(i), _) if node["type"] != "number" => Cel::Int(i),
                (_, Some(f)) if integer && f.fract() == 0.0 && f.abs() < 9.2e18 => {
                    Cel::Int(f as i64)
                }
                (_, Some(f)) => Cel::Float(f),
                _ => Cel::Null,
            }
        }
        Value::String(s) => Cel::String(Arc::new(s.clone())),
        Value::Array(items) => {
            let item = &node["items"];
            let embedded = item["x-kubernetes-embedded-resource"] == true;
            Cel::List(Arc::new(
                items.iter().map(|i| to_cel(item, i, embedded)).collect(),
            ))
        }
        Value::Object(map) => {
            let mut entries: Vec<(String, Cel)> = Vec::new();
            if let Some(props) = node["properties"].as_object() {
                for (k, sub) in props {
                    if resource && k == "metadata" {
                        continue;
                    }
                    if let (Some(val), Some(name)) = (map.get(k), escape(k)) {
                        let embedded = sub["x-kubernetes-embedded-resource"] == true;
                        entries.push((name, to_cel(sub, val, embedded)));
                    }
                }
            } else if let Some(more) = node.get("additionalProperties").filter(|a| a.is_object()) {
                let embedded = more["x-kubernetes-embedded-resource"] == true;
                for (k, val) in map {
                    entries.push((k.clone(), to_cel(more, val, embedded)));
                }
            } else if !resource {
                for (k, val) in map {
                    entries.push((k.clone(), to_cel(&Value::Null, val, false)));
                }
            }
            if resource {
                for k in ["apiVersion", "kind"] {
                    if let Some(Value::String(s)) = map.get(k) {
                        entries.retain(|(name, _)| name != k);
                        entries.push((k.to_string(), Cel::String(Arc::new(s.clone()))));
                    }
                }
                if let Some(meta) = map.get("metadata").and_then(Value::as_object) {
                    let names =
                        ["name", "generateName"]
                            .into_iter()
                            .filter_map(|k| match meta.get(k) {
                                Some(Value::String(s)) => {
                                    Some((k.to_string(), Cel::String(Arc::new(s.clone()))))
                                }
                                _ => None,
                            });
                    entries.push(("metadata".to_string(), cel_map(names)));
                }
            }
            cel_map(entries)
        }
    }
}

/// An optional (for `optionalOldSelf`): a map holding `@optional`, a list
/// of zero or one value.
fn optional(v: Option<Cel>) -> Cel {
    cel_map([(
        "@optional".to_string(),
        Cel::List(Arc::new(v.into_iter().collect())),
    )])
}

fn optional_inner(v: &Cel) -> Option<Option<Cel>> {
    let Cel::Map(m) = v else { return None };
    match m.map.get(&Key::String(Arc::new("@optional".into()))) {
        Some(Cel::List(l)) => Some(l.first().cloned()),
        _ => None,
    }
}

// ---------------------------------------------------------------------------
// Evaluation

/// The cost of the rule running now; past [`PER_CALL_LIMIT`] it stops.
#[derive(Default)]
struct Meter {
    used: AtomicU64,
}

const COST_EXCEEDED: &str = "operation cancelled: actual cost limit exceeded";

/// One write's evaluation: the interpreter's context with this module's
/// functions, the cost meter and what is left of the budget.
struct Run {
    ctx: Context<'static>,
    meter: Arc<Meter>,
    budget: u64,
    /// Set once a limit is hit: no further rule runs.
    stopped: bool,
}

impl Run {
    fn new() -> Run {
        let meter = Arc::new(Meter::default());
        let mut ctx = Context::default();
        functions(&mut ctx);
        let m = meter.clone();
        ctx.add_function("@cost", move |n: i64| -> Result<bool, ExecutionError> {
            let used = m.used.fetch_add(n.max(0) as u64, Ordering::Relaxed) + n.max(0) as u64;
            if used > PER_CALL_LIMIT {
                Err(ExecutionError::function_error("@cost", COST_EXCEEDED))
            } else {
                Ok(true)
            }
        });
        Run {
            ctx,
            meter,
            budget: REQUEST_BUDGET,
            stopped: false,
        }
    }

    /// Runs the rules of `rules` and below on `obj`. `parent_unchanged`:
    /// whether the nearest ancestor with an old value equals it (what an
    /// uncorrelated node ratchets by, as kube's `shouldRatchetError`).
    fn node(
        &mut self,
        rules: &Rules,
        path: &str,
        obj: &Value,
        old: Option<&Value>,
        parent_unchanged: bool,
        out: &mut Vec<Cause>,
    ) {
        if obj.is_null() || self.stopped {
            return;
        }
        let unchanged = old.map_or(parent_unchanged, |o| o == obj);
        self.rules(rules, path, obj, old, unchanged, out);
        match obj {
            Value::Array(items) => {
                if let Some(item_rules) = &rules.items {
                    let keys: Vec<&str> = match rules.node["x-kubernetes-list-type"].as_str() {
                        Some("map") => rules.node["x-kubernetes-list-map-keys"]
                            .as_array()
                            .into_iter()
                            .flatten()
                            .filter_map(Value::as_str)
                            .collect(),
                        _ => Vec::new(),
                    };
                    let old_items = old.and_then(Value::as_array);
                    for (i, item) in items.iter().enumerate() {
                        let old_item = match old_items {
                            Some(olds) if !keys.is_empty() => olds
                                .iter()
                                .find(|o| keys.iter().all(|k| o.get(*k) == item.get(*k))),
                            _ => None,
                        };
                        let at = format!("{path}[{i}]");
                        self.node(item_rules, &at, item, old_item, unchanged, out);
                    }
                }
            }
            Value::Object(map) => {
                let correlated = rules.node["x-kubernetes-map-type"] != "atomic";
                let old_of = |k: &str| old.filter(|_| correlated).and_then(|o| o.get(k));
                if let Some(more) = &rules.additional {
                    for (k, v) in map {
                        let at = format!("{path}[{k}]");
                        self.node(more, &at, v, old_of(k), unchanged, out);
                    }
                }
                for (k, sub) in &rules.properties {
                    if let Some(v) = map.get(k) {
                        self.node(sub, &child(path, k), v, old_of(k), unchanged, out);
                    }
                }
            }
            _ => {}
        }
    }

    /// Runs the rules of one node. A rule without `oldSelf` that fails on
    /// an `unchanged` node is ratcheted (kube's CRDValidationRatcheting:
    /// an update may keep what an older schema allowed); kube answers
    /// those with a `Warning`, this apiserver lets them pass silently.
    fn rules(
        &mut self,
        rules: &Rules,
        path: &str,
        obj: &Value,
        old: Option<&Value>,
        unchanged: bool,
        out: &mut Vec<Cause>,
    ) {
        if rules.rules.is_empty() {
            return;
        }
        let ty = Value::String(rules.node["type"].as_str().unwrap_or_default().to_string());
        let at = if path.is_empty() { "<nil>" } else { path };
        if self.budget == 0 {
            out.push(out_of_budget(at, &ty));
            self.stopped = true;
            return;
        }
        let this = to_cel(&rules.node, obj, rules.resource);
        let old_self = old
            .filter(|o| !o.is_null())
            .map(|o| to_cel(&rules.node, o, rules.resource));
        self.ctx.add_variable_from_value("self", this);
        for rule in &rules.rules {
            let old_value = match (&old_self, rule.optional_old_self) {
                (_, true) => optional(old_self.clone()),
                (Some(o), false) => o.clone(),
                (None, false) if rule.uses_old_self => continue,
                (None, false) => Cel::Null,
            };
            self.ctx.add_variable_from_value("oldSelf", old_value);
            let result = self.eval(&rule.program, rule.base_cost);
            if self.meter.used.load(Ordering::Relaxed) > PER_CALL_LIMIT {
                out.push(invalid(
                    at,
                    &ty,
                    &format!(
                        "'{COST_EXCEEDED}': no further validation rules will be run due to call cost exceeds limit for rule: {}",
                        rule.shown()
                    ),
                ));
                self.stopped = true;
                return;
            }
            if !self.charge() {
                out.push(out_of_budget(at, &ty));
                self.stopped = true;
                return;
            }
            let detail = match result {
                Ok(Cel::Bool(true)) => continue,
                Ok(Cel::Bool(false)) => None,
                Ok(_) => Some(format!("'no such overload': call arguments did not match a supported operator, function or macro signature for rule: {}", rule.shown())),
                Err(e) if e == "no such overload" => Some(format!("'no such overload': call arguments did not match a supported operator, function or macro signature for rule: {}", rule.shown())),
                Err(e) => Some(format!("{e} evaluating rule: {}", rule.shown())),
            };
            if let Some(detail) = detail {
                out.push(invalid(at, &ty, &detail));
                continue;
            }
            if unchanged && !rule.uses_old_self {
                continue;
            }
            let field = if rule.field_path.is_empty() {
                at.to_string()
            } else {
                child(path, &rule.field_path)
            };
            let message = match &rule.message_expression {
                Some((source, m)) => match self.message(m) {
                    Ok(text) => Some(text),
                    Err(MessageError::CallLimit) => {
                        out.push(invalid(&field, &ty, &format!("no further validation rules will be run due to call cost exceeds limit for messageExpression: {source:?}")));
                        self.stopped = true;
                        return;
                    }
                    Err(MessageError::Budget) => {
                        out.push(invalid(&field, &ty, "messageExpression evaluation failed due to running out of cost budget, no further validation rules will be run"));
                        self.stopped = true;
                        return;
                    }
                    Err(MessageError::Ignored) => None,
                },
                None => None,
            };
            let detail = message.unwrap_or_else(|| match &rule.message {
                Some(m) => m.clone(),
                None => format!("failed rule: {}", rule.text),
            });
            out.push(match rule.reason {
                Reason::Invalid => invalid(&field, &ty, &detail),
                Reason::Forbidden => forbidden(&field, &detail),
                Reason::Required => required(&field, &detail),
                Reason::Duplicate => cause(
                    &field,
                    "FieldValueDuplicate",
                    format!("Duplicate value: {}", super::shown(&ty)),
                ),
            });
        }
    }

    /// Runs `program`, its meter starting at `base`; the value, or the
    /// error as cel-go words it.
    fn eval(&self, program: &IdedExpr, base: u64) -> Result<Cel, String> {
        self.meter.used.store(base, Ordering::Relaxed);
        let ctx = &self.ctx;
        match catch_unwind(AssertUnwindSafe(|| Cel::resolve(program, ctx))) {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(e)) => Err(runtime_error(&e)),
            Err(_) => Err("no such overload".into()),
        }
    }

    /// Takes the meter's reading off the budget; false when it ran out.
    fn charge(&mut self) -> bool {
        let used = self.meter.used.load(Ordering::Relaxed);
        if used > self.budget {
            self.budget = 0;
            return false;
        }
        self.budget -= used;
        true
    }

    fn message(&mut self, m: &IdedExpr) -> Result<String, MessageError> {
        let result = self.eval(m, nodes(m));
        if self.meter.used.load(Ordering::Relaxed) > PER_CALL_LIMIT {
            return Err(MessageError::CallLimit);
        }
        if !self.charge() {
            return Err(MessageError::Budget);
        }
        match result {
            Ok(Cel::String(s)) => {
                let text = s.trim();
                if text.is_empty() || text.len() > MAX_MESSAGE_BYTES || text.contains('\n') {
                    Err(MessageError::Ignored)
                } else {
                    Ok(text.to_string())
                }
            }
            _ => Err(MessageError::Ignored),
        }
    }
}

/// Why a `messageExpression` gave no message: it cost more than one call
/// may, or the write's budget ran out (the write fails on either), or it
/// failed otherwise (kube logs it and uses the rule's message).
enum MessageError {
    CallLimit,
    Budget,
    Ignored,
}

fn out_of_budget(at: &str, ty: &Value) -> Cause {
    invalid(
        at,
        ty,
        "validation failed due to running out of cost budget, no further validation rules will be run",
    )
}

/// An interpreter error as cel-go words it.
fn runtime_error(e: &ExecutionError) -> String {
    match e {
        ExecutionError::NoSuchKey(k) => format!("no such key: {k}"),
        ExecutionError::DivisionByZero(_) => "division by zero".into(),
        ExecutionError::RemainderByZero(_) => "modulus by zero".into(),
        ExecutionError::Overflow(..) => "integer overflow".into(),
        ExecutionError::FunctionError { message, .. } => message.clone(),
        _ => "no such overload".into(),
    }
}

// ---------------------------------------------------------------------------
// Functions

type Res<T> = Result<T, ExecutionError>;

fn overload() -> ExecutionError {
    ExecutionError::function_error("", "no such overload")
}

fn list_of(v: &Cel) -> Res<&Arc<Vec<Cel>>> {
    match v {
        Cel::List(l) => Ok(l),
        _ => Err(overload()),
    }
}

/// Registers the functions the interpreter lacks, and `size`, `min` and
/// `max` as CEL defines them (code points; lists as receivers).
fn functions(ctx: &mut Context<'static>) {
    ctx.add_function("@range", |v: Cel| -> Res<Cel> {
        match v {
            Cel::List(_) | Cel::Map(_) => Ok(v),
            _ => Err(overload()),
        }
    });
    ctx.add_function("size", |This(v): This<Cel>| -> Res<i64> {
        Ok(match &v {
            Cel::String(s) => s.chars().count() as i64,
            Cel::Bytes(b) => b.len() as i64,
            Cel::List(l) => l.len() as i64,
            Cel::Map(m) => m.map.len() as i64,
            _ => return Err(overload()),
        })
    });
    ctx.add_function("dyn", |v: Cel| -> Res<Cel> { Ok(v) });
    ctx.add_function("lowerAscii", |This(s): This<Arc<String>>| {
        s.to_ascii_lowercase()
    });
    ctx.add_function("upperAscii", |This(s): This<Arc<String>>| {
        s.to_ascii_uppercase()
    });
    ctx.add_function("trim", |This(s): This<Arc<String>>| s.trim().to_string());
    ctx.add_function(
        "charAt",
        |This(s): This<Arc<String>>, i: i64| -> Res<Arc<String>> {
            let chars: Vec<char> = s.chars().collect();
            match usize::try_from(i) {
                Ok(i) if i < chars.len() => Ok(Arc::new(chars[i].to_string())),
                Ok(i) if i == chars.len() => Ok(Arc::new(String::new())),
                _ => Err(ExecutionError::function_error(
                    "charAt",
                    format!("index out of range: {i}"),
                )),
            }
        },
    );
    ctx.add_function(
        "substring",
        |ftx: &FunctionContext, This(s): This<Arc<String>>, start: i64| -> Res<Arc<String>> {
            let chars: Vec<char> = s.chars().collect();
            let end = if ftx.args.len() == 2 {
                match ftx.ptx.resolve(&ftx.args[1])? {
                    Cel::Int(e) => e,
                    _ => return Err(overload()),
                }
            } else {
                chars.len() as i64
            };
            if start < 0 || end < start || end as usize > chars.len() {
                return Err(ExecutionError::function_error(
                    "substring",
                    format!(
                        "index out of range: {}",
                        if start < 0 || start as usize > chars.len() {
                            start
                        } else {
                            end
                        }
                    ),
                ));
            }
            Ok(Arc::new(
                chars[start as usize..end as usize].iter().collect(),
            ))
        },
    );
    ctx.add_function(
        "replace",
        |ftx: &FunctionContext,
         This(s): This<Arc<String>>,
         from: Arc<String>,
         to: Arc<String>|
         -> Res<Arc<String>> {
            let limit = if ftx.args.len() == 3 {
                match ftx.ptx.resolve(&ftx.args[2])? {
                    Cel::Int(n) => n,
                    _ => return Err(overload()),
                }
            } else {
                -1
            };
            Ok(Arc::new(if limit < 0 {
                s.replace(from.as_str(), &to)
            } else {
                s.replacen(from.as_str(), &to, limit as usize)
            }))
        },
    );
    ctx.add_function(
        "split",
        |This(s): This<Arc<String>>, sep: Arc<String>| -> Res<Cel> {
            let parts: Vec<Cel> = if sep.is_empty() {
                s.chars()
                    .map(|c| Cel::String(Arc::new(c.to_string())))
                    .collect()
            } else {
                s.split(sep.as_str())
                    .map(|p| Cel::String(Arc::new(p.to_string())))
                    .collect()
            };
            Ok(Cel::List(Arc::new(parts)))
        },
    );
    ctx.add_function(
        "join",
        |ftx: &FunctionContext, This(l): This<Cel>| -> Res<Arc<String>> {
            let sep = match ftx.args.first() {
                Some(a) => match ftx.ptx.resolve(a)? {
                    Cel::String(s) => s.to_string(),
                    _ => return Err(overload()),
                },
                None => String::new(),
            };
            let parts: Res<Vec<String>> = list_of(&l)?
                .iter()
                .map(|p| match p {
                    Cel::String(s) => Ok(s.to_string()),
                    _ => Err(overload()),
                })
                .collect();
            Ok(Arc::new(parts?.join(&sep)))
        },
    );
    ctx.add_function("indexOf", |This(t): This<Cel>, x: Cel| -> Res<i64> {
        index_of(&t, &x, false)
    });
    ctx.add_function("lastIndexOf", |This(t): This<Cel>, x: Cel| -> Res<i64> {
        index_of(&t, &x, true)
    });
    ctx.add_function("isSorted", |This(l): This<Cel>| -> Res<bool> {
        let l = list_of(&l)?;
        for w in l.windows(2) {
            match w[0].partial_cmp(&w[1]) {
                Some(std::cmp::Ordering::Greater) => return Ok(false),
                Some(_) => {}
                None => return Err(overload()),
            }
        }
        Ok(true)
    });
    ctx.add_function("sum", |This(l): This<Cel>| -> Res<Cel> {
        let l = list_of(&l)?;
        let mut acc = match l.first() {
            Some(Cel::Float(_)) => Cel::Float(0.0),
            Some(Cel::UInt(_)) => Cel::UInt(0),
            _ => Cel::Int(0),
        };
        for v in l.iter() {
            acc = (acc + v.clone())?;
        }
        Ok(acc)
    });
    for (name, want) in [
        ("min", std::cmp::Ordering::Less),
        ("max", std::cmp::Ordering::Greater),
    ] {
        ctx.add_function(name, move |ftx: &FunctionContext| -> Res<Cel> {
            let values: Vec<Cel> = match (&ftx.this, ftx.args.len()) {
                (Some(t), 0) => list_of(t)?.to_vec(),
                (None, 1) => match ftx.ptx.resolve(&ftx.args[0])? {
                    Cel::List(l) => l.to_vec(),
                    v => vec![v],
                },
                _ => {
                    let mut all: Vec<Cel> = ftx.this.iter().cloned().collect();
                    for a in &ftx.args {
                        all.push(ftx.ptx.resolve(a)?);
                    }
                    all
                }
            };
            let mut best: Option<Cel> = None;
            for v in values {
                best = Some(match best {
                    None => v,
                    Some(b) => match v.partial_cmp(&b) {
                        Some(o) if o == want => v,
                        Some(_) => b,
                        None => return Err(overload()),
                    },
                });
            }
            best.ok_or_else(|| {
                ExecutionError::function_error(
                    name,
                    format!("{name}(list) argument must not be empty"),
                )
            })
        });
    }
    ctx.add_function(
        "find",
        |This(s): This<Arc<String>>, re: Arc<String>| -> Res<Arc<String>> {
            let re = regex(&re)?;
            Ok(Arc::new(
                re.find(&s)
                    .map(|m| m.as_str().to_string())
                    .unwrap_or_default(),
            ))
        },
    );
    ctx.add_function(
        "findAll",
        |ftx: &FunctionContext, This(s): This<Arc<String>>, re: Arc<String>| -> Res<Cel> {
            let re = regex(&re)?;
            let limit = if ftx.args.len() == 2 {
                match ftx.ptx.resolve(&ftx.args[1])? {
                    Cel::Int(n) if n >= 0 => n as usize,
                    Cel::Int(_) => usize::MAX,
                    _ => return Err(overload()),
                }
            } else {
                usize::MAX
            };
            Ok(Cel::List(Arc::new(
                re.find_iter(&s)
                    .take(limit)
                    .map(|m| Cel::String(Arc::new(m.as_str().to_string())))
                    .collect(),
            )))
        },
    );
    ctx.add_function(
        "matches",
        |This(s): This<Arc<String>>, re: Arc<String>| -> Res<bool> { Ok(regex(&re)?.is_match(&s)) },
    );
    ctx.add_function("hasValue", |This(o): This<Cel>| -> Res<bool> {
        optional_inner(&o).map(|v| v.is_some()).ok_or_else(overload)
    });
    ctx.add_function("value", |This(o): This<Cel>| -> Res<Cel> {
        match optional_inner(&o) {
            Some(Some(v)) => Ok(v),
            Some(None) => Err(ExecutionError::function_error(
                "value",
                "optional.none() dereference",
            )),
            None => Err(overload()),
        }
    });
    ctx.add_function("orValue", |This(o): This<Cel>, default: Cel| -> Res<Cel> {
        match optional_inner(&o) {
            Some(v) => Ok(v.unwrap_or(default)),
            None => Err(overload()),
        }
    });
}

fn regex(re: &str) -> Res<regex::Regex> {
    regex::Regex::new(re).map_err(|e| {
        ExecutionError::function_error("matches", format!("error parsing regexp: {e}"))
    })
}

/// `indexOf`/`lastIndexOf` of a substring (in code points) or a list item.
fn index_of(target: &Cel, x: &Cel, last: bool) -> Res<i64> {
    match (target, x) {
        (Cel::String(s), Cel::String(sub)) => {
            let found = if last {
                s.rfind(sub.as_str())
            } else {
                s.find(sub.as_str())
            };
            Ok(found.map_or(-1, |b| s[..b].chars().count() as i64))
        }
        (Cel::List(l), x) => {
            let found = if last {
                l.iter().rposition(|v| v == x)
            } else {
                l.iter().position(|v| v == x)
            };
            Ok(found.map_or(-1, |i| i as i64))
        }
        _ => Err(overload()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn run(rule: &str, this: Value) -> Result<Cel, String> {
        let node = json!({"type": "object", "x-kubernetes-preserve-unknown-fields": true});
        let Compiled::Ready(r) = compile(&node, &json!({"rule": rule})) else {
            return Err("did not compile".into());
        };
        let mut run = Run::new();
        run.ctx
            .add_variable_from_value("self", to_cel(&node, &this, false));
        run.eval(&r.program, r.base_cost)
    }

    fn holds(rule: &str, this: Value) -> bool {
        run(rule, this.clone()) == Ok(Cel::Bool(true))
    }

    #[test]
    fn macros_strings_and_lists() {
        let this = json!({"l": [1, 2, 3], "s": "Hello-World", "m": {"a": 1}});
        for rule in [
            "size(self.l) == 3 && self.l.size() == 3",
            "self.l.all(x, x > 0) && self.l.exists(x, x == 2) && self.l.exists_one(x, x > 2)",
            "self.l.map(x, x * 2) == [2, 4, 6] && self.l.filter(x, x % 2 == 1) == [1, 3]",
            "has(self.m.a) && !has(self.m.b) && 'a' in self.m",
            "self.s.startsWith('Hello') && self.s.endsWith('World') && self.s.contains('-')",
            "self.s.lowerAscii() == 'hello-world' && self.s.upperAscii() == 'HELLO-WORLD'",
            "self.s.matches('^[A-Z][a-z]+-') && self.s.find('[a-z]+') == 'ello'",
            "self.s.split('-') == ['Hello', 'World'] && ['a', 'b'].join('/') == 'a/b'",
            "self.s.indexOf('o') == 4 && self.s.lastIndexOf('o') == 7 && self.s.substring(6) == 'World'",
            "self.s.replace('o', '0') == 'Hell0-W0rld' && self.s.charAt(1) == 'e'",
            "self.l.isSorted() && !([3, 1].isSorted()) && self.l.sum() == 6",
            "self.l.min() == 1 && self.l.max() == 3 && max(4, 9) == 9",
            "'héllo'.size() == 5",
        ] {
            assert!(holds(rule, this.clone()), "{rule}: {:?}", run(rule, this.clone()));
        }
    }

    #[test]
    fn runtime_errors_read_as_cel_go() {
        assert_eq!(
            run("self.missing == 1", json!({})),
            Err("no such key: missing".into())
        );
        assert_eq!(
            run("1 / self.z == 1", json!({"z": 0})),
            Err("division by zero".into())
        );
        assert_eq!(
            run("self.s.all(c, c == 'a')", json!({"s": "aa"})),
            Err("no such overload".into())
        );
        assert_eq!(
            run("self.s.lowerAscii()", json!({"s": 1})),
            Err("no such overload".into())
        );
    }

    #[test]
    fn cost_is_bounded_per_call() {
        // 1000³ iterations: stopped long before.
        let l: Vec<i64> = (0..1000).collect();
        let r = run(
            "self.l.all(a, self.l.all(b, self.l.all(c, a + b + c >= 0)))",
            json!({"l": l}),
        );
        assert_eq!(r, Err(COST_EXCEEDED.to_string()));
    }

    #[test]
    fn compile_refuses_unknown_names_and_syntax() {
        let node = json!({"type": "object"});
        let failed = |rule: &str| match compile(&node, &json!({"rule": rule})) {
            Compiled::Failed(c) => c
                .into_iter()
                .map(|c| format!("{}: {}", c.field, c.message))
                .collect::<Vec<_>>(),
            _ => Vec::new(),
        };
        assert_eq!(
            failed("self.a > other"),
            ["rule: Invalid value: apiextensions.ValidationRule{Rule:\"self.a > other\", Message:\"\", MessageExpression:\"\", Reason:(*apiextensions.FieldValueErrorReason)(nil), FieldPath:\"\", OptionalOldSelf:(*bool)(nil)}: compilation failed: ERROR: <input>: undeclared reference to 'other' (in container '')"]
        );
        assert!(
            failed("self.a >")[0].contains("compilation failed: ERROR: <input>"),
            "{:?}",
            failed("self.a >")
        );
        assert!(
            failed("self.a ==== 1")[0].contains("compilation failed: ERROR: <input>:1:"),
            "{:?}",
            failed("self.a ==== 1")
        );
        assert!(failed("self.l.bogus()")[0]
            .ends_with("undeclared reference to 'bogus' (in container '')"));
        assert!(matches!(
            compile(&node, &json!({"rule": "self.l.all(x, x > 0)"})),
            Compiled::Ready(_)
        ));
        assert!(matches!(
            compile(&node, &json!({"rule": "isURL(self.u) && quantity(self.q).isLessThan(quantity('1'))"})),
            Compiled::Unsupported(n) if n == ["isLessThan", "isURL", "quantity"]
        ));
        assert_eq!(failed("self.a > 0",), Vec::<String>::new());
        let with = |extra: Value| {
            let mut rule = json!({"rule": "self.a > 0"});
            rule.as_object_mut()
                .unwrap()
                .extend(extra.as_object().unwrap().clone());
            match compile(&node, &rule) {
                Compiled::Failed(c) => c
                    .into_iter()
                    .map(|c| format!("{}: {}", c.field, c.message))
                    .collect::<Vec<_>>(),
                _ => Vec::new(),
            }
        };
        assert_eq!(
            with(json!({"reason": "Bogus"})),
            ["reason: Unsupported value: \"Bogus\": supported values: \"FieldValueDuplicate\", \"FieldValueForbidden\", \"FieldValueInvalid\", \"FieldValueRequired\""]
        );
        assert_eq!(
            with(json!({"fieldPath": ".nope"})),
            ["fieldPath: Invalid value: \".nope\": fieldPath must be a valid path: does not refer to a valid field"]
        );
        assert_eq!(
            with(json!({"optionalOldSelf": true})),
            ["optionalOldSelf: Invalid value: true: may not be set if oldSelf is not used in rule"]
        );
    }

    #[test]
    fn field_paths_normalize_as_kube_prints_them() {
        let node = json!({"type": "object", "properties": {
            "a": {"type": "object", "properties": {"b": {"type": "string"}}},
            "m": {"type": "object", "additionalProperties": {"type": "string"}}}});
        assert_eq!(normalized_field_path(".a.b", &node), Ok("a.b".into()));
        assert_eq!(
            normalized_field_path(".m['x.y']", &node),
            Ok("m[x.y]".into())
        );
        assert_eq!(
            normalized_field_path("a", &node),
            Err("expected [ or . but got: a".into())
        );
    }

    #[test]
    fn values_are_typed_and_escaped_by_the_schema() {
        let node = json!({"type": "object", "properties": {
            "n": {"type": "number"}, "i": {"type": "integer"},
            "ios": {"x-kubernetes-int-or-string": true},
            "my-field": {"type": "string"}, "if": {"type": "string"}, "a.b": {"type": "string"},
            "metadata": {"type": "object"}}});
        let v = to_cel(
            &node,
            &json!({"n": 1, "i": 2, "ios": "50%", "my-field": "x", "if": "y", "a.b": "z",
                    "apiVersion": "g/v1", "kind": "K", "metadata": {"name": "n", "uid": "u"}}),
            true,
        );
        let Cel::Map(m) = v else { panic!() };
        let get = |k: &str| m.map.get(&Key::String(Arc::new(k.into()))).cloned();
        assert_eq!(get("n"), Some(Cel::Float(1.0)));
        assert_eq!(get("i"), Some(Cel::Int(2)));
        assert_eq!(get("ios"), Some(Cel::String(Arc::new("50%".into()))));
        assert_eq!(
            get("my__dash__field"),
            Some(Cel::String(Arc::new("x".into())))
        );
        assert_eq!(get("__if__"), Some(Cel::String(Arc::new("y".into()))));
        assert_eq!(get("a__dot__b"), Some(Cel::String(Arc::new("z".into()))));
        assert_eq!(get("kind"), Some(Cel::String(Arc::new("K".into()))));
        let Some(Cel::Map(meta)) = get("metadata") else {
            panic!()
        };
        assert_eq!(meta.map.len(), 1);
    }

    #[test]
    fn unchanged_nodes_ratchet_rules_without_old_self() {
        let root = json!({"type": "object", "properties": {"spec": {"type": "object",
            "properties": {"a": {"type": "object", "properties": {"n": {"type": "integer"}},
                "x-kubernetes-validations": [{"rule": "self.n < 5"}]},
              "l": {"type": "array", "items": {"type": "integer",
                "x-kubernetes-validations": [{"rule": "self < 5"}]}}}}}});
        let rules = Rules::new(&root).expect("rules");
        let fields = |obj: Value, old: Option<Value>| -> Vec<String> {
            rules
                .validate(&obj, old.as_ref())
                .into_iter()
                .map(|c| c.field)
                .collect()
        };
        let old = json!({"spec": {"a": {"n": 9}, "l": [9]}});
        // Unchanged: the rules an older schema did not have let it pass.
        assert!(fields(
            json!({"spec": {"a": {"n": 9}, "l": [9], "x": 1}}),
            Some(old.clone())
        )
        .is_empty());
        // Changed (and new, on create): checked.
        assert_eq!(
            fields(
                json!({"spec": {"a": {"n": 8}, "l": [9]}}),
                Some(old.clone())
            ),
            ["spec.a"]
        );
        assert_eq!(
            fields(json!({"spec": {"a": {"n": 9}, "l": [9, 8]}}), Some(old)),
            ["spec.l[0]", "spec.l[1]"]
        );
        assert_eq!(
            fields(json!({"spec": {"a": {"n": 9}, "l": []}}), None),
            ["spec.a"]
        );
    }

    #[test]
    fn message_expressions_and_their_limits() {
        let root = json!({"type": "object", "properties": {"spec": {"type": "object",
            "properties": {"l": {"type": "array", "items": {"type": "integer"}}},
            "x-kubernetes-validations": [
                {"rule": "self.l.size() < 2", "messageExpression": "'too many: ' + string(self.l.size())"},
                {"rule": "self.l.size() < 3", "message": "fallback", "messageExpression": "self.nope"},
                {"rule": "self.l.size() < 4",
                 "messageExpression": "self.l.all(a, self.l.all(b, self.l.all(c, true))) ? 'x' : 'y'"},
                {"rule": "false"}]}}});
        let rules = Rules::new(&root).expect("rules");
        let texts = |n: i64| -> Vec<String> {
            let l: Vec<i64> = (0..n).collect();
            rules
                .validate(&json!({"spec": {"l": l}}), None)
                .into_iter()
                .map(|c| format!("{}: {}", c.field, c.message))
                .collect()
        };
        assert_eq!(
            texts(3),
            [
                "spec: Invalid value: \"object\": too many: 3",
                "spec: Invalid value: \"object\": fallback",
                "spec: Invalid value: \"object\": failed rule: false",
            ]
        );
        assert_eq!(
            texts(300)[2],
            "spec: Invalid value: \"object\": no further validation rules will be run due to call cost exceeds limit for messageExpression: \"self.l.all(a, self.l.all(b, self.l.all(c, true))) ? 'x' : 'y'\""
        );
        assert_eq!(texts(300).len(), 3);
    }

    #[test]
    fn old_values_correlate_by_map_list_keys_and_map_keys() {
        let root = json!({"type": "object", "properties": {
            "l": {"type": "array", "x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["name"],
                "items": {"type": "object", "properties": {"name": {"type": "string"}, "port": {"type": "integer"}},
                    "x-kubernetes-validations": [{"rule": "self.port == oldSelf.port", "message": "port is immutable"}]}},
            "m": {"type": "object", "additionalProperties": {"type": "string",
                "x-kubernetes-validations": [{"rule": "self == oldSelf", "message": "immutable"}]}}}});
        let rules = Rules::new(&root).expect("rules");
        let texts = |obj: Value, old: Value| -> Vec<String> {
            rules
                .validate(&obj, Some(&old))
                .into_iter()
                .map(|c| format!("{}: {}", c.field, c.message))
                .collect()
        };
        let old = json!({"l": [{"name": "a", "port": 1}], "m": {"k": "v"}});
        // Reordered, with a new item and a new key: nothing to compare.
        assert!(texts(
            json!({"l": [{"name": "b", "port": 9}, {"name": "a", "port": 1}], "m": {"k": "v", "j": "w"}}),
            old.clone()
        )
        .is_empty());
        assert_eq!(
            texts(
                json!({"l": [{"name": "b", "port": 9}, {"name": "a", "port": 2}], "m": {"k": "x"}}),
                old
            ),
            [
                "l[1]: Invalid value: \"object\": port is immutable",
                "m[k]: Invalid value: \"string\": immutable",
            ]
        );
    }

    #[test]
    fn transition_rules_run_only_with_an_old_value() {
        let root = json!({"type": "object", "properties": {"spec": {"type": "object",
            "properties": {"size": {"type": "integer"}},
            "x-kubernetes-validations": [
                {"rule": "self.size >= oldSelf.size", "message": "size may not shrink"},
                {"rule": "!oldSelf.hasValue() || oldSelf.value().size != 7", "optionalOldSelf": true}]}}});
        let rules = Rules::new(&root).expect("rules");
        let texts = |obj: Value, old: Option<Value>| -> Vec<String> {
            rules
                .validate(&obj, old.as_ref())
                .into_iter()
                .map(|c| format!("{}: {}", c.field, c.message))
                .collect()
        };
        assert!(texts(json!({"spec": {"size": 1}}), None).is_empty());
        assert_eq!(
            texts(
                json!({"spec": {"size": 1}}),
                Some(json!({"spec": {"size": 2}}))
            ),
            ["spec: Invalid value: \"object\": size may not shrink"]
        );
        assert_eq!(
            texts(json!({"spec": {"size": 8}}), Some(json!({"spec": {"size": 7}}))),
            ["spec: Invalid value: \"object\": failed rule: !oldSelf.hasValue() || oldSelf.value().size != 7"]
        );
    }
}
