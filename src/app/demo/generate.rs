//! Deterministic synthetic portfolios: the shipped demo sample and benchmark portfolios.

use crate::adapters::channel::sim::{AccountSpec, Income};
use crate::adapters::channel::Scenario;
use crate::domain::import::{BorrowerInput, LoanInput, MandateInput};
use crate::domain::{generate_schedule, round_money, Method, PlannedInstallment, Terms};
use chrono::{Datelike, Days, NaiveDate};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use rust_decimal::Decimal;

/// What the simulated account of a borrower does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Profile {
    /// Plenty of money.
    Rich,
    /// About 80% of the first installment on the due date, salary on payday.
    Short,
    /// The first mandate's card is frozen; the second one works.
    Frozen,
    /// The first submit times out after the debit was applied.
    Timeout,
    /// Little money and no income: goes overdue and ends with collections.
    Broke,
}

const ZONES: [(&str, &str); 3] = [
    ("Asia/Shanghai", "CNY"),
    ("America/New_York", "USD"),
    ("Europe/London", "GBP"),
];
const CHANNELS: [&str; 3] = ["unionpay", "wechat", "bank"];

fn profile_for(r: f64) -> Profile {
    match r {
        x if x < 0.62 => Profile::Rich,
        x if x < 0.80 => Profile::Short,
        x if x < 0.88 => Profile::Frozen,
        x if x < 0.94 => Profile::Timeout,
        _ => Profile::Broke,
    }
}

/// A generated loan with the scenario accounts its mandates need.
pub struct Generated {
    pub loan: LoanInput,
    pub profile: Profile,
    pub accounts: Vec<AccountSpec>,
}

/// The demo sample: `n` loans of 3–6 monthly installments, first due within 4 weeks of
/// `start`, in three time zones, under both shipped policies.
pub fn demo_loan(i: usize, rng: &mut StdRng, start: NaiveDate) -> Generated {
    let (tz, currency) = ZONES[if i % 10 < 8 { 0 } else { 1 + i % 2 }];
    let profile = profile_for(rng.gen());
    let months = [3, 4, 6][rng.gen_range(0..3)];
    let principal = Decimal::new(rng.gen_range(3_000..30_000) * 100, 2);
    let method = [
        Method::Annuity,
        Method::EqualPrincipal,
        Method::Annuity,
        Method::Bullet,
    ][rng.gen_range(0..4)];
    let first_due = start + Days::new(rng.gen_range(3..28));
    let terms = Terms {
        principal,
        annual_rate: Decimal::new(rng.gen_range(8..24), 2),
        months,
        first_due,
        method,
    };
    let installments = generate_schedule(&terms).expect("generated terms are valid");
    let payday =
        (rng.gen_bool(0.6) || profile == Profile::Short).then(|| [10, 15, 25][rng.gen_range(0..3)]);
    let id = format!("L{:05}", i + 1);
    let channel = CHANNELS[i % 3];
    let mut mandates = vec![mandate(channel, &format!("AGR-{id}-1"), rng)];
    if profile == Profile::Frozen || rng.gen_bool(0.2) {
        mandates.push(mandate(CHANNELS[(i + 1) % 3], &format!("AGR-{id}-2"), rng));
    }
    let accounts = accounts_for(profile, &mandates, &installments, payday, start);
    let loan = LoanInput {
        id: id.clone(),
        borrower: borrower(i, payday),
        currency: currency.into(),
        tz: tz.parse().expect("known zone"),
        policy: if i % 10 < 7 { "standard" } else { "gentle" }.into(),
        allow_early: i % 13 != 0,
        mandates,
        installments,
    };
    Generated {
        loan,
        profile,
        accounts,
    }
}

fn borrower(i: usize, payday: Option<u32>) -> BorrowerInput {
    const NAMES: [&str; 8] = [
        "Wang Fang",
        "Li Wei",
        "Zhang Min",
        "Liu Yang",
        "Chen Jing",
        "Alex Morgan",
        "Sam Taylor",
        "Jo Evans",
    ];
    BorrowerInput {
        id: format!("B{:05}", i + 1),
        name: NAMES[i % NAMES.len()].into(),
        phone: format!("138{:08}", 10_000_000 + i * 7919 % 89_999_999),
        email: format!("borrower{}@example.com", i + 1),
        payday,
        update: false,
    }
}

fn mandate(channel: &str, agreement: &str, rng: &mut StdRng) -> MandateInput {
    let card = format!("6222{:012}", rng.gen_range(0..1_000_000_000_000u64));
    MandateInput {
        channel: channel.into(),
        agreement: agreement.into(),
        account_masked: crate::domain::pii::mask_account(&card),
        per_debit_limit: Some(Decimal::new(50_000_00, 2)),
        daily_limit: Some(Decimal::new(100_000_00, 2)),
    }
}

fn accounts_for(
    profile: Profile,
    mandates: &[MandateInput],
    insts: &[PlannedInstallment],
    payday: Option<u32>,
    start: NaiveDate,
) -> Vec<AccountSpec> {
    let first = &insts[0];
    let owed = first.principal + first.interest + first.fee;
    let primary = mandates[0].agreement.clone();
    let spec = |balance: Decimal| AccountSpec::with_balance(primary.clone(), balance);
    match profile {
        Profile::Rich => vec![],
        Profile::Short => {
            let mut a = spec(round_money(owed * Decimal::new(80, 2)));
            a.income = paydays(payday.unwrap_or(15), start, 5)
                .into_iter()
                .map(|date| Income {
                    date,
                    amount: round_money(owed * Decimal::new(120, 2)),
                })
                .collect();
            vec![a]
        }
        Profile::Frozen => {
            let mut a = spec(Decimal::new(1_000_000_00, 2));
            a.fail = Some("CARD_FROZEN".into());
            vec![a]
        }
        Profile::Timeout => {
            let mut a = spec(Decimal::new(1_000_000_00, 2));
            a.unknown_first = 1;
            vec![a]
        }
        Profile::Broke => vec![spec(round_money(owed * Decimal::new(10, 2)))],
    }
}

/// The borrower's next `n` paydays after `start`.
fn paydays(day: u32, start: NaiveDate, n: u32) -> Vec<NaiveDate> {
    (0..n)
        .filter_map(|k| {
            let m = start.checked_add_months(chrono::Months::new(k))?;
            NaiveDate::from_ymd_opt(m.year(), m.month(), day.min(28))
        })
        .filter(|d| *d > start)
        .collect()
}

/// The demo portfolio and its simulator scenario.
pub fn demo_portfolio(n: usize, seed: u64, start: NaiveDate) -> (Vec<Generated>, Scenario) {
    let mut rng = StdRng::seed_from_u64(seed);
    let loans: Vec<Generated> = (0..n).map(|i| demo_loan(i, &mut rng, start)).collect();
    let mut scenario = Scenario {
        timezone: "Asia/Shanghai".parse().expect("zone"),
        seed,
        ..Scenario::default()
    };
    scenario.accounts = loans.iter().flat_map(|g| g.accounts.clone()).collect();
    (loans, scenario)
}

/// CSV text of loans in the import format (terms are expanded to explicit installments,
/// so the file shows exactly what will be collected).
pub fn to_csv(loans: &[LoanInput]) -> String {
    let mut w = csv::Writer::from_writer(Vec::new());
    w.write_record([
        "loan_id",
        "borrower_id",
        "borrower_name",
        "phone",
        "email",
        "payday",
        "currency",
        "timezone",
        "policy",
        "allow_early",
        "mandates",
        "method",
        "principal",
        "annual_rate",
        "months",
        "first_due",
        "due_date",
        "interest",
        "fee",
    ])
    .expect("in memory");
    for l in loans {
        let mandates: Vec<String> = l
            .mandates
            .iter()
            .map(|m| {
                let lim = |d: Option<Decimal>| d.map(|d| d.to_string()).unwrap_or_default();
                format!(
                    "{}:{}:{}:{}:{}",
                    m.channel,
                    m.agreement,
                    m.account_masked,
                    lim(m.per_debit_limit),
                    lim(m.daily_limit)
                )
            })
            .collect();
        for i in &l.installments {
            let b = &l.borrower;
            w.write_record([
                l.id.as_str(),
                &b.id,
                &b.name,
                &b.phone,
                &b.email,
                &b.payday.map(|d| d.to_string()).unwrap_or_default(),
                &l.currency,
                l.tz.name(),
                &l.policy,
                if l.allow_early { "true" } else { "false" },
                &mandates.join(";"),
                "",
                &i.principal.to_string(),
                "",
                "",
                "",
                &i.due_date.to_string(),
                &i.interest.to_string(),
                &i.fee.to_string(),
            ])
            .expect("in memory");
        }
    }
    String::from_utf8(w.into_inner().expect("in memory")).expect("utf8")
}
