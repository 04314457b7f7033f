//! Collection policies: named, versioned TOML files in `policies/`.
//!
//! A policy says when to send notices, when to attempt debits (early, due date, overdue,
//! payday), how to step the amount down, how penalties accrue, how payments are allocated,
//! how delinquency is bucketed and how channel failure codes are classified.
//!
//! [`parse_policy`] reports syntax and type errors (one, as toml stops at the first) and then
//! every semantic problem, each with file, line, column and the dotted field path.
//! Omitted sections and fields take the defaults documented on each type.

use crate::domain::{parse_money, Component, FailureClass, InstallmentOrder, PenaltyBase};
use chrono::NaiveTime;
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fmt;

// ---------------------------------------------------------------------------------------------
// Types
// ---------------------------------------------------------------------------------------------

/// A complete collection policy. Only `name` and `version` are required in the file.
mod locate;
mod validate;

use locate::{keys, Locator};
use validate::validate;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Policy {
    pub name: String,
    pub version: u32,
    #[serde(default)]
    pub description: String,
    #[serde(default)]
    pub notices: NoticePolicy,
    #[serde(default)]
    pub early: EarlyPolicy,
    #[serde(default)]
    pub due: DuePolicy,
    #[serde(default)]
    pub overdue: OverduePolicy,
    #[serde(default)]
    pub payday: PaydayPolicy,
    #[serde(default)]
    pub limits: Limits,
    #[serde(default)]
    pub ladder: LadderPolicy,
    #[serde(default)]
    pub penalty: PenaltyPolicy,
    #[serde(default)]
    pub allocation: AllocationPolicy,
    #[serde(default)]
    pub delinquency: DelinquencyPolicy,
    /// Key = channel name, or "default". A "default" table with the standard codes is added
    /// when the file does not define one.
    #[serde(default = "default_codes")]
    pub codes: BTreeMap<String, CodeTable>,
}

/// A number of days (before the due date) and a local time of day.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DayOffset {
    pub days: u32,
    #[serde(with = "hhmm")]
    pub at: NaiveTime,
}

/// Default: T-3 and T-1 at 10:00 by SMS, result notices on, overdue reminders every 3 days
/// at 10:30, quiet 22:00–08:00, at most 3 messages per borrower per day.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct NoticePolicy {
    pub before_due: Vec<DayOffset>,
    pub channels: Vec<NoticeChannel>,
    pub on_result: bool,
    /// 0 = no overdue reminders.
    pub overdue_every_days: u32,
    #[serde(with = "hhmm")]
    pub overdue_at: NaiveTime,
    pub quiet_hours: Vec<QuietHours>,
    pub daily_cap: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NoticeChannel {
    Sms,
    Email,
}

/// A window with no collection contact, `[start, end)`; it may wrap midnight (22:00–08:00).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QuietHours {
    #[serde(with = "hhmm")]
    pub start: NaiveTime,
    #[serde(with = "hhmm")]
    pub end: NaiveTime,
}

/// Default: no early attempts (some contracts forbid them).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EarlyPolicy {
    pub allowed: bool,
    /// Days before the due date and the local time.
    pub slots: Vec<DayOffset>,
}

/// Default: 08:00, 12:00 and 20:00 on the due date.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DuePolicy {
    #[serde(with = "hhmm_list")]
    pub at: Vec<NaiveTime>,
}

/// Default: 09:00, daily for 3 days, then every 7 days.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct OverduePolicy {
    #[serde(with = "hhmm")]
    pub at: NaiveTime,
    pub daily_for_days: u32,
    pub then_every_days: u32,
}

/// Default: disabled; when enabled, on payday and the day after at 09:00.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PaydayPolicy {
    pub enabled: bool,
    pub days_after: Vec<u32>,
    #[serde(with = "hhmm")]
    pub at: NaiveTime,
}

/// Default: 30 attempts per installment, stop auto-debit 90 days past due, never write off
/// automatically.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Limits {
    pub max_attempts_per_installment: u32,
    pub stop_after_days_past_due: u32,
    /// Write the loan off (kind `policy`) once its oldest unpaid installment is more than this
    /// many days past due; absent = never.
    pub write_off_after_days_past_due: Option<u32>,
    /// After a payment, a loan owing this much or less in total is written off (kind
    /// `residue`); 0 = never.
    #[serde(deserialize_with = "dec::deserialize")]
    pub residue_threshold: Decimal,
}

/// Default: no step-down (`steps = [1]`), floor 0, on INSUFFICIENT_BALANCE, next slot.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LadderPolicy {
    /// Shares of the amount due, strictly decreasing, each in (0, 1].
    #[serde(deserialize_with = "dec::deserialize_list")]
    pub steps: Vec<Decimal>,
    /// Never ask for less than this (unless less is owed).
    #[serde(deserialize_with = "dec::deserialize")]
    pub min_amount: Decimal,
    /// Failure codes that move to the next step.
    pub on_codes: Vec<String>,
    /// Try the next step at once in the same slot (true) or in the next slot (false).
    pub within_slot: bool,
}

/// Default: no penalty.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PenaltyPolicy {
    /// A daily fraction: 0.0005 = 0.05% per day.
    #[serde(deserialize_with = "dec::deserialize")]
    pub daily_rate: Decimal,
    pub grace_days: u32,
    pub base: PenaltyBase,
}

/// Default: penalty → fee → interest → principal, oldest installment first.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AllocationPolicy {
    pub order: Vec<Component>,
    pub installments: InstallmentOrder,
}

/// Default: M1 1–30, M2 31–60, M3 61–90, M3+ 91–.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DelinquencyPolicy {
    pub buckets: Vec<BucketDef>,
}

/// Days past due `from..=to`; `to` omitted = open-ended (only the last bucket).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BucketDef {
    pub name: String,
    pub from: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub to: Option<u32>,
}

/// How one channel's failure codes are classified. Codes in no list get `unlisted`
/// (default `unknown`: query rather than assume).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CodeTable {
    #[serde(default)]
    pub soft: Vec<String>,
    #[serde(default)]
    pub hard: Vec<String>,
    #[serde(default)]
    pub unknown: Vec<String>,
    #[serde(default = "unknown_class")]
    pub unlisted: FailureClass,
}

// ---------------------------------------------------------------------------------------------
// Defaults and helpers
// ---------------------------------------------------------------------------------------------

fn time(h: u32, m: u32) -> NaiveTime {
    NaiveTime::from_hms_opt(h, m, 0).expect("valid time")
}

fn unknown_class() -> FailureClass {
    FailureClass::Unknown
}

fn strings(items: &[&str]) -> Vec<String> {
    items.iter().map(|s| s.to_string()).collect()
}

fn default_codes() -> BTreeMap<String, CodeTable> {
    BTreeMap::from([("default".to_string(), CodeTable::standard())])
}

impl Default for NoticePolicy {
    fn default() -> Self {
        let at = time(10, 0);
        NoticePolicy {
            before_due: vec![DayOffset { days: 3, at }, DayOffset { days: 1, at }],
            channels: vec![NoticeChannel::Sms],
            on_result: true,
            overdue_every_days: 3,
            overdue_at: time(10, 30),
            quiet_hours: vec![QuietHours {
                start: time(22, 0),
                end: time(8, 0),
            }],
            daily_cap: 3,
        }
    }
}

impl Default for DuePolicy {
    fn default() -> Self {
        DuePolicy {
            at: vec![time(8, 0), time(12, 0), time(20, 0)],
        }
    }
}

impl Default for OverduePolicy {
    fn default() -> Self {
        OverduePolicy {
            at: time(9, 0),
            daily_for_days: 3,
            then_every_days: 7,
        }
    }
}

impl Default for PaydayPolicy {
    fn default() -> Self {
        PaydayPolicy {
            enabled: false,
            days_after: vec![0, 1],
            at: time(9, 0),
        }
    }
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_attempts_per_installment: 30,
            stop_after_days_past_due: 90,
            write_off_after_days_past_due: None,
            residue_threshold: Decimal::ZERO,
        }
    }
}

impl Default for LadderPolicy {
    fn default() -> Self {
        LadderPolicy {
            steps: vec![Decimal::ONE],
            min_amount: Decimal::ZERO,
            on_codes: strings(&["INSUFFICIENT_BALANCE"]),
            within_slot: false,
        }
    }
}

impl Default for PenaltyPolicy {
    fn default() -> Self {
        PenaltyPolicy {
            daily_rate: Decimal::ZERO,
            grace_days: 0,
            base: PenaltyBase::Principal,
        }
    }
}

impl Default for AllocationPolicy {
    fn default() -> Self {
        AllocationPolicy {
            order: Component::DEFAULT_ORDER.to_vec(),
            installments: InstallmentOrder::OldestFirst,
        }
    }
}

impl Default for DelinquencyPolicy {
    fn default() -> Self {
        let b = |name: &str, from, to| BucketDef {
            name: name.to_string(),
            from,
            to,
        };
        DelinquencyPolicy {
            buckets: vec![
                b("M1", 1, Some(30)),
                b("M2", 31, Some(60)),
                b("M3", 61, Some(90)),
                b("M3+", 91, None),
            ],
        }
    }
}

impl Default for CodeTable {
    fn default() -> Self {
        CodeTable {
            soft: vec![],
            hard: vec![],
            unknown: vec![],
            unlisted: FailureClass::Unknown,
        }
    }
}

impl CodeTable {
    /// The codes the channel simulator emits.
    pub fn standard() -> Self {
        CodeTable {
            soft: strings(&[
                "INSUFFICIENT_BALANCE",
                "EXCEED_SINGLE_LIMIT",
                "EXCEED_DAILY_LIMIT",
                // A timed-out order the channel (simulator) never applied: nothing debited.
                "TIMEOUT_NOT_APPLIED",
            ]),
            hard: strings(&[
                "CARD_FROZEN",
                "CARD_CANCELLED",
                "CARD_LOST",
                "NO_AGREEMENT",
                "AGREEMENT_EXPIRED",
            ]),
            unknown: strings(&["PROCESSING", "SYSTEM_BUSY", "TIMEOUT"]),
            unlisted: FailureClass::Unknown,
        }
    }

    /// The class of `code` in this table; `unlisted` when it is in no list.
    pub fn classify(&self, code: &str) -> FailureClass {
        self.listed(code).unwrap_or(self.unlisted)
    }

    fn listed(&self, code: &str) -> Option<FailureClass> {
        self.lists()
            .into_iter()
            .find(|(_, list)| list.iter().any(|c| c == code))
            .map(|(c, _)| c)
    }

    fn lists(&self) -> [(FailureClass, &Vec<String>); 3] {
        [
            (FailureClass::Soft, &self.soft),
            (FailureClass::Hard, &self.hard),
            (FailureClass::Unknown, &self.unknown),
        ]
    }
}

impl Policy {
    /// Classify a failure code: the channel's table if present, else "default". Without any
    /// table the code is `Unknown` (query, never resubmit).
    pub fn classify(&self, channel: &str, code: &str) -> FailureClass {
        let table = self
            .codes
            .get(channel)
            .or_else(|| self.codes.get("default"));
        table.map_or(FailureClass::Unknown, |t| t.classify(code))
    }
}

impl NoticeChannel {
    pub fn as_str(self) -> &'static str {
        match self {
            NoticeChannel::Sms => "sms",
            NoticeChannel::Email => "email",
        }
    }
}

impl fmt::Display for NoticeChannel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl QuietHours {
    /// Whether `t` falls inside the window (start inclusive, end exclusive).
    pub fn contains(&self, t: NaiveTime) -> bool {
        if self.start <= self.end {
            self.start <= t && t < self.end
        } else {
            t >= self.start || t < self.end
        }
    }

    /// The window as minute ranges within one day (two when it wraps midnight).
    fn ranges(&self) -> Vec<(u32, u32)> {
        let (s, e) = (minutes(self.start), minutes(self.end));
        if s < e {
            vec![(s, e)]
        } else {
            vec![(s, 24 * 60), (0, e)]
        }
    }

    fn overlaps(&self, other: &QuietHours) -> bool {
        let theirs = other.ranges();
        self.ranges()
            .iter()
            .any(|a| theirs.iter().any(|b| a.0 < b.1 && b.0 < a.1))
    }
}

impl fmt::Display for QuietHours {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}–{}",
            self.start.format("%H:%M"),
            self.end.format("%H:%M")
        )
    }
}

fn minutes(t: NaiveTime) -> u32 {
    use chrono::Timelike;
    t.hour() * 60 + t.minute()
}

impl NoticePolicy {
    /// Whether `t` falls in any quiet window.
    pub fn is_quiet(&self, t: NaiveTime) -> bool {
        self.quiet_hours.iter().any(|q| q.contains(t))
    }
}

impl DelinquencyPolicy {
    /// The bucket for a number of days past due, if any.
    pub fn bucket_for(&self, days_past_due: u32) -> Option<&BucketDef> {
        self.buckets.iter().find(|b| b.contains(days_past_due))
    }
}

impl BucketDef {
    pub fn contains(&self, days_past_due: u32) -> bool {
        days_past_due >= self.from && self.to.is_none_or(|to| days_past_due <= to)
    }
}

// ---------------------------------------------------------------------------------------------
// Serde helpers: "HH:MM" times and decimals written as strings or numbers
// ---------------------------------------------------------------------------------------------

mod hhmm {
    use chrono::NaiveTime;
    use serde::de::{Error, Visitor};
    use serde::{Deserializer, Serializer};
    use std::fmt;

    /// Parses inside the visitor so that errors carry the value's position.
    struct HhmmVisitor;

    impl Visitor<'_> for HhmmVisitor {
        type Value = NaiveTime;

        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a time of day written \"HH:MM\"")
        }

        fn visit_str<E: Error>(self, s: &str) -> Result<NaiveTime, E> {
            parse(s).map_err(E::custom)
        }
    }

    pub fn parse(s: &str) -> Result<NaiveTime, String> {
        let shaped = s.len() == 5 && s.as_bytes()[2] == b':';
        let t = if shaped {
            NaiveTime::parse_from_str(s, "%H:%M").ok()
        } else {
            None
        };
        t.ok_or_else(|| format!("`{s}` is not a time of day written \"HH:MM\" (00:00 to 23:59)"))
    }

    pub fn serialize<S: Serializer>(t: &NaiveTime, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(&t.format("%H:%M"))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<NaiveTime, D::Error> {
        d.deserialize_str(HhmmVisitor)
    }
}

mod hhmm_list {
    use chrono::NaiveTime;
    use serde::{Deserialize, Deserializer, Serializer};

    /// One list element, so that a bad element is reported at its own position.
    struct Hhmm(NaiveTime);

    impl<'de> Deserialize<'de> for Hhmm {
        fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
            super::hhmm::deserialize(d).map(Hhmm)
        }
    }

    pub fn serialize<S: Serializer>(v: &[NaiveTime], s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(v.iter().map(|t| t.format("%H:%M").to_string()))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<NaiveTime>, D::Error> {
        let v = Vec::<Hhmm>::deserialize(d)?;
        Ok(v.into_iter().map(|h| h.0).collect())
    }
}

mod dec {
    use rust_decimal::Decimal;
    use serde::de::{Error, Visitor};
    use serde::{Deserialize, Deserializer};
    use std::fmt;

    /// Accepts "0.75", 0.75 and 1. A float goes through its shortest string form, so
    /// 0.75 becomes exactly 0.75; no arithmetic is done in floats.
    struct DecimalVisitor;

    impl Visitor<'_> for DecimalVisitor {
        type Value = Decimal;

        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a decimal number such as 0.75 or \"0.75\"")
        }

        fn visit_str<E: Error>(self, s: &str) -> Result<Decimal, E> {
            s.trim()
                .parse()
                .map_err(|_| E::custom(format!("`{s}` is not a decimal number")))
        }

        fn visit_i64<E: Error>(self, v: i64) -> Result<Decimal, E> {
            Ok(Decimal::from(v))
        }

        fn visit_u64<E: Error>(self, v: u64) -> Result<Decimal, E> {
            Ok(Decimal::from(v))
        }

        fn visit_f64<E: Error>(self, v: f64) -> Result<Decimal, E> {
            let s = v.to_string();
            s.parse()
                .map_err(|_| E::custom(format!("{s} cannot be held as an exact decimal")))
        }
    }

    struct Element(Decimal);

    impl<'de> Deserialize<'de> for Element {
        fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
            d.deserialize_any(DecimalVisitor).map(Element)
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Decimal, D::Error> {
        d.deserialize_any(DecimalVisitor)
    }

    pub fn deserialize_list<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<Decimal>, D::Error> {
        let v = Vec::<Element>::deserialize(d)?;
        Ok(v.into_iter().map(|e| e.0).collect())
    }
}

// ---------------------------------------------------------------------------------------------
// Errors
// ---------------------------------------------------------------------------------------------

/// One problem in a policy file. Line and column are 1-based.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolicyProblem {
    pub file: String,
    pub line: usize,
    pub column: usize,
    /// Dotted path, e.g. "ladder.steps[2]".
    pub field: String,
    pub message: String,
}

impl fmt::Display for PolicyProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let PolicyProblem {
            file,
            line,
            column,
            field,
            message,
        } = self;
        write!(f, "{file}:{line}:{column}: {field}: {message}")
    }
}

impl std::error::Error for PolicyProblem {}

/// All problems found, one per line when displayed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}", one_per_line(.0))]
pub struct PolicyErrors(pub Vec<PolicyProblem>);

fn one_per_line(problems: &[PolicyProblem]) -> String {
    let lines: Vec<String> = problems.iter().map(|p| p.to_string()).collect();
    lines.join("\n")
}

/// A problem with a whole file (it cannot be read, say).
pub fn file_problem(file: &str, message: String) -> PolicyErrors {
    let field = "(file)".to_string();
    PolicyErrors(vec![PolicyProblem {
        file: file.to_string(),
        line: 1,
        column: 1,
        field,
        message,
    }])
}

// ---------------------------------------------------------------------------------------------
// Parsing
// ---------------------------------------------------------------------------------------------

/// Parse and validate one policy. `file` is only used in problem reports.
/// Parse and check a policy, reporting every problem in the file: each value of the wrong
/// type, then every rule the values break, all located `FILE:LINE:COLUMN: FIELD`.
pub fn parse_policy(src: &str, file: &str) -> Result<Policy, PolicyErrors> {
    let locator = Locator::new(src, file);
    let (mut policy, mut problems) = read_typed(src, &locator)?;
    policy
        .codes
        .entry("default".to_string())
        .or_insert_with(CodeTable::standard);
    problems.extend(
        validate(&policy)
            .iter()
            .map(|i| locator.problem_at(&i.path, &i.message)),
    );
    if problems.is_empty() {
        return Ok(policy);
    }
    problems.sort_by_key(|p| (p.line, p.column));
    problems.dedup();
    Err(PolicyErrors(problems))
}

/// How many values of the wrong type one check reports before it gives up.
const MAX_TYPE_PROBLEMS: usize = 20;

/// Deserialize, and on a value of the wrong type note it, blank that `key = value` (spaces
/// in place, so every later offset and line stays true; the field takes its default) and
/// read again. Returns the policy read around the bad values and their problems; a syntax
/// error, or a required field missing, ends the reading.
fn read_typed(src: &str, locator: &Locator) -> Result<(Policy, Vec<PolicyProblem>), PolicyErrors> {
    let mut text = src.to_string();
    let mut problems = Vec::new();
    loop {
        let e = match toml::from_str::<Policy>(&text) {
            Ok(p) => return Ok((p, problems)),
            Err(e) => e,
        };
        // A required field reported missing after a blank is our own doing: not a problem.
        let ours = !problems.is_empty() && locate::missing_field(e.message()).is_some();
        if !ours {
            problems.push(locator.toml_problem(&e));
        }
        let target = e.span().and_then(|s| locator.assignment_around(&s));
        match target {
            Some(r) if !ours && problems.len() < MAX_TYPE_PROBLEMS => blank(&mut text, r),
            _ => return Err(PolicyErrors(problems)),
        }
    }
}

/// Spaces over `range`, newlines kept.
fn blank(text: &mut String, range: std::ops::Range<usize>) {
    let blanked: String = text[range.clone()]
        .chars()
        .map(|c| if c == '\n' { c } else { ' ' })
        .collect();
    text.replace_range(range, &blanked);
}

pub const BUILTIN: [(&str, &str); 2] = [
    (
        "policies/standard.toml",
        include_str!("../../../policies/standard.toml"),
    ),
    (
        "policies/gentle.toml",
        include_str!("../../../policies/gentle.toml"),
    ),
];

/// Policies by name.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PolicySet {
    by_name: BTreeMap<String, Policy>,
}

impl PolicySet {
    /// The policies shipped in `policies/`, embedded in the binary.
    pub fn builtin() -> PolicySet {
        let mut set = PolicySet::default();
        for (file, src) in BUILTIN {
            let policy = parse_policy(src, file)
                .unwrap_or_else(|e| panic!("built-in policy {file} is invalid:\n{e}"));
            set.insert(policy);
        }
        set
    }

    pub fn get(&self, name: &str) -> Option<&Policy> {
        self.by_name.get(name)
    }

    /// Policy names, sorted.
    pub fn names(&self) -> Vec<&str> {
        self.by_name.keys().map(String::as_str).collect()
    }

    /// Add a policy, replacing any with the same name.
    pub fn insert(&mut self, p: Policy) {
        self.by_name.insert(p.name.clone(), p);
    }

    /// Add the policy in `src` (from `file`), refusing a name another file already defined
    /// (`origin` remembers which file defined each name). Reading the files is the caller's.
    pub fn add_source(
        &mut self,
        src: &str,
        file: &str,
        origin: &mut BTreeMap<String, String>,
    ) -> Result<(), PolicyErrors> {
        let policy = parse_policy(src, file)?;
        if let Some(first) = origin.get(&policy.name) {
            let message = format!("policy `{}` is already defined in {first}", policy.name);
            let problem = Locator::new(src, file).problem_at(&keys(&["name"]), &message);
            return Err(PolicyErrors(vec![problem]));
        }
        origin.insert(policy.name.clone(), file.to_string());
        self.insert(policy);
        Ok(())
    }
}

// ---------------------------------------------------------------------------------------------
// Tests
// ---------------------------------------------------------------------------------------------

#[cfg(test)]
mod tests {
    use super::*;
    use rust_decimal_macros::dec;

    const HEAD: &str = "name = \"t\"\nversion = 1\n";

    fn problems(src: &str) -> Vec<PolicyProblem> {
        parse_policy(src, "t.toml")
            .expect_err("policy should be rejected")
            .0
    }

    /// Asserts a problem at `field` on the line marked `# <` (the marker line counts from 1).
    fn assert_reported(body: &str, field: &str) {
        let src = format!("{HEAD}{body}");
        let line = src.lines().position(|l| l.contains("# <")).expect("marker") + 1;
        let found = problems(&src);
        let hit = found.iter().any(|p| p.field == field && p.line == line);
        assert!(
            hit,
            "expected `{field}` at line {line}, got:\n{}",
            PolicyErrors(found)
        );
    }

    #[test]
    fn every_problem_of_a_file_is_reported_not_only_the_first() {
        let src = format!(
            "{HEAD}[notices]\ndaily_cap = -3\nbefore_due = [{{ days = 1, at = 10 }}]\n\
             [ladder]\nmin_amount = \"abc\"\n[limits]\nmax_attempts_per_installment = 0\n"
        );
        let found = problems(&src);
        let fields: Vec<&str> = found.iter().map(|p| p.field.as_str()).collect();
        for want in [
            "notices.daily_cap",
            "notices.before_due[0].at",
            "ladder.min_amount",
            "limits.max_attempts_per_installment",
        ] {
            assert!(
                fields.contains(&want),
                "no {want} in:\n{}",
                PolicyErrors(found.clone())
            );
        }
        // In file order, each once, each on its own line.
        let lines: Vec<usize> = found.iter().map(|p| p.line).collect();
        assert!(lines.windows(2).all(|w| w[0] < w[1]), "{lines:?}");
    }

    fn parse_ok(body: &str) -> Policy {
        let src = format!("{HEAD}{body}");
        parse_policy(&src, "t.toml").unwrap_or_else(|e| panic!("should parse:\n{e}"))
    }

    #[test]
    fn shipped_policies_parse() {
        for (file, src) in BUILTIN {
            parse_policy(src, file).unwrap_or_else(|e| panic!("{e}"));
        }
        let set = PolicySet::builtin();
        assert_eq!(set.names(), vec!["gentle", "standard"]);
        let standard = set.get("standard").unwrap();
        assert_eq!(
            standard.ladder.steps,
            vec![dec!(1), dec!(0.75), dec!(0.5), dec!(0.25)]
        );
        assert_eq!(standard.ladder.min_amount, dec!(50.00));
        assert_eq!(standard.penalty.daily_rate, dec!(0.0005));
        assert_eq!(standard.due.at, vec![time(8, 0), time(12, 0), time(20, 0)]);
        assert_eq!(standard.delinquency.bucket_for(95).unwrap().name, "M3+");
        let gentle = set.get("gentle").unwrap();
        assert!(!gentle.early.allowed);
        assert_eq!(gentle.notices.channels, vec![NoticeChannel::Sms]);
        assert_eq!(
            (
                gentle.limits.max_attempts_per_installment,
                gentle.penalty.grace_days
            ),
            (10, 3)
        );
    }

    #[test]
    fn write_off_limits() {
        let p = parse_ok(
            "[limits]\nwrite_off_after_days_past_due = 180\nresidue_threshold = \"5.00\"\n",
        );
        assert_eq!(p.limits.write_off_after_days_past_due, Some(180));
        assert_eq!(p.limits.residue_threshold, dec!(5.00));
        let d = parse_ok("");
        assert_eq!(
            (
                d.limits.write_off_after_days_past_due,
                d.limits.residue_threshold
            ),
            (None, dec!(0))
        );
        assert_reported(
            "[limits]\nwrite_off_after_days_past_due = 0 # <\n",
            "limits.write_off_after_days_past_due",
        );
        assert_reported(
            "[limits]\nresidue_threshold = \"0.001\" # <\n",
            "limits.residue_threshold",
        );
    }

    #[test]
    fn omitted_sections_take_defaults() {
        let p = parse_ok("");
        assert_eq!(p.allocation.order, Component::DEFAULT_ORDER.to_vec());
        assert_eq!(p.allocation.installments, InstallmentOrder::OldestFirst);
        assert_eq!(p.codes["default"], CodeTable::standard());
        assert!(p.notices.is_quiet(time(23, 0)) && !p.notices.is_quiet(time(8, 0)));
    }

    #[test]
    fn float_step_is_exact() {
        let p = parse_ok(
            "[ladder]\nsteps = [1, 0.75, 0.1]\nmin_amount = 50\n[penalty]\ndaily_rate = 0.0005\n",
        );
        assert_eq!(p.ladder.steps[1], dec!(0.75));
        assert_eq!(p.ladder.steps[1].to_string(), "0.75");
        assert_eq!(p.ladder.steps[2].to_string(), "0.1");
        assert_eq!(p.penalty.daily_rate.to_string(), "0.0005");
        assert_eq!(p.ladder.min_amount, dec!(50));
    }

    #[test]
    fn serialized_policy_parses_back() {
        for name in ["standard", "gentle"] {
            let p = PolicySet::builtin().get(name).unwrap().clone();
            let text = toml::to_string(&p).unwrap();
            assert_eq!(parse_policy(&text, "round-trip.toml").unwrap(), p);
        }
    }

    #[test]
    fn classify_uses_channel_then_default() {
        let p = parse_ok("[codes.wechat]\nsoft = [\"NOT_ENOUGH\"]\nunlisted = \"hard\"\n");
        assert_eq!(
            p.classify("bank", "INSUFFICIENT_BALANCE"),
            FailureClass::Soft
        );
        assert_eq!(p.classify("bank", "CARD_LOST"), FailureClass::Hard);
        assert_eq!(p.classify("bank", "TIMEOUT"), FailureClass::Unknown);
        assert_eq!(p.classify("bank", "WHATEVER"), FailureClass::Unknown);
        assert_eq!(p.classify("wechat", "NOT_ENOUGH"), FailureClass::Soft);
        assert_eq!(
            p.classify("wechat", "INSUFFICIENT_BALANCE"),
            FailureClass::Hard
        );
    }

    #[test]
    fn ladder_steps() {
        assert_reported("[ladder]\nsteps = [1, 0] # <\n", "ladder.steps[1]");
        assert_reported("[ladder]\nsteps = [1.5] # <\n", "ladder.steps[0]");
        assert_reported(
            "[ladder]\nsteps = [\n  1,\n  0.5,\n  0.75, # <\n]\n",
            "ladder.steps[2]",
        );
        assert_reported("[ladder]\nsteps = [] # <\n", "ladder.steps");
    }

    #[test]
    fn ladder_min_amount_and_codes() {
        assert_reported("[ladder]\nmin_amount = \"-1\" # <\n", "ladder.min_amount");
        assert_reported("[ladder]\nmin_amount = 10.005 # <\n", "ladder.min_amount");
        assert_reported(
            "[ladder]\non_codes = [\"INSUFFICIENT_BALANCE\", \"CARD_LOST\"] # <\n",
            "ladder.on_codes[1]",
        );
    }

    #[test]
    fn quiet_hours() {
        let overlap = "[notices]\nquiet_hours = [\n  { start = \"22:00\", end = \"08:00\" },\n  { start = \"07:00\", end = \"09:00\" }, # <\n]\n";
        assert_reported(overlap, "notices.quiet_hours[1]");
        let wrapped = "[notices]\nquiet_hours = [{ start = \"22:00\", end = \"08:00\" },\n { start = \"23:00\", end = \"01:00\" }] # <\n";
        assert_reported(wrapped, "notices.quiet_hours[1]");
        assert_reported(
            "[notices]\nquiet_hours = [{ start = \"12:00\", end = \"12:00\" }] # <\n",
            "notices.quiet_hours[0]",
        );
        parse_ok("[notices]\nquiet_hours = [{ start = \"22:00\", end = \"08:00\" }, { start = \"12:00\", end = \"13:00\" }]\n");
    }

    #[test]
    fn notices() {
        assert_reported(
            "[notices]\nchannels = [\"sms\", \"email\", \"sms\"] # <\n",
            "notices.channels[2]",
        );
        assert_reported(
            "[notices]\nbefore_due = [{ days = 1, at = \"23:30\" }] # <\n",
            "notices.before_due[0].at",
        );
        assert_reported(
            "[notices]\nchannels = [\"fax\"] # <\n",
            "notices.channels[0]",
        );
    }

    #[test]
    fn code_tables() {
        assert_reported(
            "[codes.default]\nunlisted = \"fatal\" # <\n",
            "codes.default.unlisted",
        );
        assert_reported(
            "[codes.wechat]\nsoft = []\nretry = [\"X\"] # <\n",
            "codes.wechat.retry",
        );
        let twice = "[codes.default]\nsoft = [\"INSUFFICIENT_BALANCE\"]\nhard = [\"CARD_LOST\", \"INSUFFICIENT_BALANCE\"] # <\n";
        assert_reported(twice, "codes.default.hard[1]");
    }

    #[test]
    fn due_overdue_and_limits() {
        assert_reported("[due]\nat = [] # <\n", "due.at");
        assert_reported(
            "[due]\nat = [\"08:00\", \"12:00\", \"08:00\"] # <\n",
            "due.at[2]",
        );
        assert_reported("[due]\nat = [\"08:00\", \"25:00\"] # <\n", "due.at[1]");
        assert_reported(
            "[overdue]\ndaily_for_days = 3\nthen_every_days = 0 # <\n",
            "overdue.then_every_days",
        );
        parse_ok("[overdue]\ndaily_for_days = 90\nthen_every_days = 0\n");
        assert_reported(
            "[limits]\nmax_attempts_per_installment = 0 # <\n",
            "limits.max_attempts_per_installment",
        );
    }

    #[test]
    fn buckets() {
        let b = |name: &str, from: u32, to: &str| {
            format!("[[delinquency.buckets]]\nname = \"{name}\"\nfrom = {from}{to}\n")
        };
        let overlap = b("A", 1, "\nto = 30") + &b("B", 20, " # <\nto = 40");
        assert_reported(&overlap, "delinquency.buckets[1].from");
        let descending = b("A", 31, "\nto = 60") + &b("B", 1, " # <\nto = 30");
        assert_reported(&descending, "delinquency.buckets[1].from");
        let open_not_last = b("A", 1, "") + &b("B", 31, " # <");
        assert_reported(&open_not_last, "delinquency.buckets[1].from");
    }

    #[test]
    fn allocation_and_penalty() {
        let order = "[allocation]\norder = [\"fee\", \"fee\", \"interest\", \"principal\"] # <\n";
        assert_reported(order, "allocation.order[1]");
        assert_reported(order, "allocation.order");
        assert_reported("[penalty]\ndaily_rate = -0.1 # <\n", "penalty.daily_rate");
        assert_reported("[penalty]\ndaily_rate = \"1\" # <\n", "penalty.daily_rate");
    }

    #[test]
    fn identity() {
        let empty_name = parse_policy("version = 1\nname = \"\"\n", "t.toml")
            .unwrap_err()
            .0;
        assert_eq!(
            (empty_name[0].field.as_str(), empty_name[0].line),
            ("name", 2)
        );
        let zero = parse_policy("name = \"x\"\n\nversion = 0\n", "t.toml")
            .unwrap_err()
            .0;
        assert_eq!((zero[0].field.as_str(), zero[0].line), ("version", 3));
        let missing = parse_policy("version = 1\n", "t.toml").unwrap_err().0;
        assert_eq!(missing[0].field, "name");
    }

    #[test]
    fn unknown_keys_and_type_errors_are_located() {
        assert_reported("[ladder]\nsteps = [1]\nstepz = 2 # <\n", "ladder.stepz");
        assert_reported("colour = \"red\" # <\n", "colour");
        assert_reported(
            "[limits]\nmax_attempts_per_installment = \"many\" # <\n",
            "limits.max_attempts_per_installment",
        );
        assert_reported(
            "[early]\nslots = [{ days = 1, when = \"20:00\" }] # <\n",
            "early.slots[0].when",
        );
    }

    #[test]
    fn syntax_error_is_located() {
        let found = problems("name = \"t\"\nversion = 1\n[ladder\nsteps = [1]\n");
        assert_eq!((found[0].field.as_str(), found[0].line), ("(syntax)", 3));
        assert!(!found[0].message.contains('\n'), "{}", found[0].message);
    }

    #[test]
    fn all_problems_are_reported_and_displayed() {
        let src = "name = \"t\"\nversion = 0\n[ladder]\nsteps = [1, 1]\n[limits]\nmax_attempts_per_installment = 0\n";
        let err = parse_policy(src, "t.toml").unwrap_err();
        assert_eq!(err.0.len(), 3, "{err}");
        let text = err.to_string();
        assert_eq!(text.lines().count(), 3);
        assert!(
            text.lines()
                .any(|l| l.starts_with("t.toml:4:13: ladder.steps[1]: ")),
            "{text}"
        );
        assert!(
            text.starts_with("t.toml:2:11: version: must be at least 1\n"),
            "{text}"
        );
    }

    #[test]
    fn insert_replaces_by_name() {
        let mut set = PolicySet::default();
        let mut p = PolicySet::builtin().get("gentle").unwrap().clone();
        set.insert(p.clone());
        p.version = 2;
        set.insert(p);
        assert_eq!(set.get("gentle").unwrap().version, 2);
        assert_eq!(set.names(), vec!["gentle"]);
    }
}
