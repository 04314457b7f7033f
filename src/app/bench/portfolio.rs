//! The generated portfolio every benchmark runs on: its policy, loans, simulator scenario,
//! the engine over it, and the instants of the eve and the due-date morning.

use crate::adapters::channel::sim::AccountSpec;
use crate::adapters::channel::Scenario;
use crate::app::{load_policies, simulated_engine, AppError};
use crate::domain::import::{BorrowerInput, LoanInput, MandateInput};
use crate::domain::policy::parse_policy;
use crate::domain::{round_money, PlannedInstallment};
use crate::engine::{Engine, EngineConfig};
use crate::store::import::store_loans;
use chrono::{DateTime, Days, Months, NaiveDate, TimeZone, Utc};
use rust_decimal::Decimal;

/// The policy the benchmark portfolio follows: one SMS notice at T-1, three due-date slots,
/// result notices on, no early attempts (so the due-date run does the collecting).
pub const BENCH_POLICY: &str = r#"
name = "bench"
version = 1
description = "benchmark policy"
[notices]
before_due = [{ days = 1, at = "10:00" }]
channels = ["sms"]
on_result = true
overdue_every_days = 0
quiet_hours = [{ start = "22:00", end = "08:00" }]
daily_cap = 5
[early]
allowed = false
[due]
at = ["08:00", "12:00", "20:00"]
[ladder]
steps = [1, 0.75, 0.5, 0.25]
min_amount = "10.00"
on_codes = ["INSUFFICIENT_BALANCE"]
within_slot = true
"#;

/// Loans stored per transaction statement group while importing.
const IMPORT_CHUNK: usize = 5000;
/// Import progress is reported every this many installments.
const PROGRESS_EVERY: usize = 100_000;

/// The first (and, for the due-date run, the only due) installment's date.
pub fn first_due() -> NaiveDate {
    NaiveDate::from_ymd_opt(2027, 3, 15).expect("date")
}

/// `hour`:00 on `day` in the portfolio's zone (Asia/Shanghai, no DST), as UTC.
pub fn local_instant(day: NaiveDate, hour: u32) -> DateTime<Utc> {
    let naive = day.and_hms_opt(hour, 0, 0).expect("hour below 24");
    chrono_tz::Asia::Shanghai
        .from_local_datetime(&naive)
        .single()
        .expect("Shanghai has no DST")
        .with_timezone(&Utc)
}

/// Noon on the eve of the due date: the advance notices' run.
pub fn eve() -> DateTime<Utc> {
    local_instant(first_due() - Days::new(1), 12)
}

/// 08:00 on the due date: the first due-date slot.
pub fn due_morning() -> DateTime<Utc> {
    local_instant(first_due(), 8)
}

/// Loan `i` of the portfolio: `per_loan` monthly installments from `first_due`, one
/// mandate on one of the three channels.
pub fn bench_loan(i: usize, per_loan: usize, first_due: NaiveDate) -> LoanInput {
    let installments = (0..per_loan)
        .map(|k| PlannedInstallment {
            seq: k as u32 + 1,
            due_date: first_due
                .checked_add_months(Months::new(k as u32))
                .expect("date"),
            principal: Decimal::new(1000_00 + (i % 50) as i64 * 100, 2),
            interest: Decimal::new(35_50, 2),
            fee: Decimal::new(5_00, 2),
        })
        .collect();
    let channel = ["unionpay", "wechat", "bank"][i % 3];
    LoanInput {
        id: format!("BL{i:08}"),
        borrower: BorrowerInput {
            id: format!("BB{i:08}"),
            name: "Bench Borrower".into(),
            phone: format!("139{:08}", i % 100_000_000),
            email: format!("b{i}@example.com"),
            payday: None,
            update: false,
        },
        currency: "CNY".into(),
        tz: chrono_tz::Asia::Shanghai,
        policy: "bench".into(),
        allow_early: false,
        mandates: vec![MandateInput {
            channel: channel.into(),
            agreement: format!("BA{i:08}"),
            account_masked: "6222 **** **** 0000".into(),
            per_debit_limit: None,
            daily_limit: None,
        }],
        installments,
    }
}

/// About 10% of accounts are short of money: half empty, half with 60% of the installment.
pub fn bench_scenario(loans: usize) -> Scenario {
    let mut s = Scenario::default();
    for i in (0..loans).filter(|i| i % 10 == 3) {
        let owed = Decimal::new(1000_00 + (i % 50) as i64 * 100 + 35_50 + 5_00, 2);
        let balance = if i % 20 == 3 {
            Decimal::ZERO
        } else {
            round_money(owed * Decimal::new(60, 2))
        };
        s.accounts
            .push(AccountSpec::with_balance(format!("BA{i:08}"), balance));
    }
    s
}

/// The engine over `db` with the shipped policies and the bench policy, and the zero-latency
/// in-process simulator behind every built-in channel.
pub fn bench_engine(db: crate::store::Db, loans: usize) -> Result<Engine, AppError> {
    let mut policies = load_policies(std::path::Path::new("policies"))?;
    policies.insert(parse_policy(BENCH_POLICY, "bench policy")?);
    let log = std::env::temp_dir().join("repayd-bench-notices.log");
    let cfg = EngineConfig {
        batch_size: 5000,
        ..EngineConfig::default()
    };
    let (engine, _sims) = simulated_engine(db, policies, bench_scenario(loans), None, &log, cfg)?;
    Ok(engine)
}

/// Store `loans` loans made by `make`, in one transaction of chunks, reporting progress
/// every 100k installments on big imports.
pub async fn import_loans(
    engine: &Engine,
    loans: usize,
    make: &dyn Fn(usize) -> LoanInput,
    progress: &dyn Fn(&str),
) -> Result<(), AppError> {
    let mut tx = engine.db.begin().await?;
    let (mut installments, mut reported) = (0usize, 0usize);
    for start in (0..loans).step_by(IMPORT_CHUNK) {
        let chunk: Vec<LoanInput> = (start..(start + IMPORT_CHUNK).min(loans))
            .map(make)
            .collect();
        installments += chunk.iter().map(|l| l.installments.len()).sum::<usize>();
        store_loans(&mut tx, &chunk, 0).await?;
        if installments / PROGRESS_EVERY > reported {
            reported = installments / PROGRESS_EVERY;
            progress(&format!("  imported {installments} installments"));
        }
    }
    tx.commit().await?;
    Ok(())
}
