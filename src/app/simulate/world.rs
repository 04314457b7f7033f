//! One policy's simulated world: a fresh SQLite database, the production engine over
//! simulated channels whose accounts follow the cash-flow model, and a clock that walks the
//! window day by day, waking wherever the agenda says something is due.

use super::{Plan, SimulateError};
use crate::adapters::channel::sim::AccountSpec;
use crate::adapters::channel::Scenario;
use crate::app::{simulated_engine, AppError, Sims};
use crate::domain::import::LoanInput;
use crate::domain::policy::{Policy, PolicySet};
use crate::domain::simulation::borrower::{
    daily_spending, pays_on_own, plan_accounts, BorrowerFacts, Window,
};
use crate::domain::simulation::figures::{compute, Figures, Frame};
use crate::engine::{Engine, EngineConfig};
use crate::store::{simulation as rows, Db};
use chrono::{DateTime, Days, NaiveDate, NaiveTime, Utc};
use chrono_tz::Tz;
use indicatif::ProgressBar;
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::path::Path;

/// Run `policy` over the plan's window on a fresh database at `db_path`.
pub async fn run_policy(
    plan: &Plan,
    policy: &Policy,
    db_path: &Path,
    bar: &ProgressBar,
) -> Result<Figures, SimulateError> {
    let loans: Vec<LoanInput> = plan
        .loans
        .iter()
        .map(|l| LoanInput {
            policy: policy.name.clone(),
            ..l.clone()
        })
        .collect();
    let scenario = scenario_for(plan, &loans);
    let tz = scenario.timezone;
    let db = Db::open(&format!("sqlite://{}", db_path.display()))
        .await
        .map_err(AppError::from)?;
    let mut set = PolicySet::default();
    set.insert(policy.clone());
    let log = db_path.with_extension("notices.log");
    let (engine, sims) = simulated_engine(db, set, scenario, None, &log, EngineConfig::default())
        .map_err(AppError::from)?;
    let start = local_midnight(plan.start, tz);
    let mut tx = engine.db.begin().await.map_err(AppError::from)?;
    crate::store::import::store_loans(&mut tx, &loans, start.timestamp_millis())
        .await
        .map_err(AppError::from)?;
    tx.commit().await.map_err(AppError::from)?;
    let mut world = World::new(plan, &loans, &sims, tz);
    for day in 0..plan.days {
        let date = plan.start + Days::new(u64::from(day));
        world.spend(date, &plan.model);
        world.run_day(&engine, date).await?;
        bar.set_position(u64::from(day + 1));
    }
    bar.finish_with_message("figures");
    figures_of(&engine, plan, policy).await
}

/// The channel-side accounts of every loan, as the model plans them.
fn scenario_for(plan: &Plan, loans: &[LoanInput]) -> Scenario {
    let window = Window {
        seed: plan.seed,
        start: plan.start,
        days: plan.days,
    };
    let mut scenario = Scenario {
        timezone: main_zone(loans),
        seed: plan.seed,
        ..Scenario::default()
    };
    let d = &mut scenario.default;
    d.balance = rust_decimal::Decimal::ZERO;
    d.unknown_rate = plan.model.timeouts.unknown_rate;
    d.unknown_applied_share = plan.model.timeouts.applied_share;
    d.stable_draws = true;
    let mut seen = std::collections::HashSet::new();
    for l in loans {
        let first = l
            .installments
            .first()
            .map(|i| i.principal + i.interest + i.fee);
        let facts = BorrowerFacts {
            borrower: &l.borrower.id,
            payday: l.borrower.payday,
            installment: first.unwrap_or_default(),
            agreements: l.mandates.iter().map(|m| m.agreement.as_str()).collect(),
        };
        for a in plan_accounts(&plan.model, window, &facts) {
            if seen.insert(a.agreement.clone()) {
                scenario.accounts.push(account_spec(a));
            }
        }
    }
    scenario
}

fn account_spec(a: crate::domain::simulation::borrower::AccountPlan) -> AccountSpec {
    let mut spec = AccountSpec::with_balance(a.agreement, a.opening);
    spec.income = a
        .income
        .into_iter()
        .map(|(date, amount)| crate::adapters::channel::sim::Income { date, amount })
        .collect();
    if let Some((from, code)) = a.hard_failure {
        spec.fail = Some(code);
        spec.fail_from = Some(from);
    }
    spec
}

/// The zone most loans are in: the simulator's days (income, spending) follow it.
fn main_zone(loans: &[LoanInput]) -> Tz {
    let mut counts: BTreeMap<&str, usize> = BTreeMap::new();
    for l in loans {
        *counts.entry(l.tz.name()).or_default() += 1;
    }
    let best = counts
        .into_iter()
        .max_by_key(|(name, n)| (*n, std::cmp::Reverse(*name)));
    best.and_then(|(name, _)| name.parse().ok())
        .unwrap_or(Tz::UTC)
}

fn local_midnight(date: NaiveDate, tz: Tz) -> DateTime<Utc> {
    crate::domain::local_to_utc(date, NaiveTime::MIN, tz)
}

/// The moving parts between runs: who was contacted lately, where each loan's money goes.
struct World<'a> {
    seed: u64,
    model: &'a crate::domain::simulation::model::Model,
    tz: Tz,
    sims: &'a Sims,
    /// Agreement → index of its channel's simulator.
    sim_of: HashMap<String, usize>,
    /// Borrower → local dates of their recent contacts (the last 7 days).
    recent: HashMap<String, VecDeque<NaiveDate>>,
    /// Borrower → the last date they paid on their own (at most once a week).
    cured: HashMap<String, NaiveDate>,
    last_run: DateTime<Utc>,
}

impl<'a> World<'a> {
    fn new(plan: &'a Plan, loans: &[LoanInput], sims: &'a Sims, tz: Tz) -> World<'a> {
        let channel_index: HashMap<&str, usize> = sims
            .sims
            .iter()
            .enumerate()
            .map(|(i, s)| (crate::domain::channel::Channel::name(s.as_ref()), i))
            .collect();
        let sim_of = loans
            .iter()
            .flat_map(|l| l.mandates.iter())
            .filter_map(|m| Some((m.agreement.clone(), *channel_index.get(m.channel.as_str())?)))
            .collect();
        World {
            seed: plan.seed,
            model: &plan.model,
            tz,
            sims,
            sim_of,
            recent: HashMap::new(),
            cured: HashMap::new(),
            last_run: local_midnight(plan.start, tz),
        }
    }

    fn spend(&self, date: NaiveDate, model: &crate::domain::simulation::model::Model) {
        for s in &self.sims.sims {
            s.spend_daily(date, |b| daily_spending(model, b));
        }
    }

    /// Every run the agenda asks for on `date`, and one just after midnight (penalties,
    /// overdue marking); after each, the borrowers it contacted may pay on their own.
    async fn run_day(&mut self, engine: &Engine, date: NaiveDate) -> Result<(), SimulateError> {
        let end = local_midnight(date + Days::new(1), self.tz);
        let mut now = local_midnight(date, self.tz) + chrono::Duration::minutes(5);
        loop {
            engine.run_once(now).await.map_err(AppError::from)?;
            self.react(engine, now).await?;
            match engine.next_wakeup(now).await.map_err(AppError::from)? {
                Some(next) if next < end => now = next.max(now + chrono::Duration::seconds(1)),
                _ => return Ok(()),
            }
        }
    }

    async fn react(&mut self, engine: &Engine, now: DateTime<Utc>) -> Result<(), SimulateError> {
        let mut conn = engine.db.pool.acquire().await.map_err(AppError::from)?;
        let contacts = rows::contacts_between(&mut conn, self.last_run, now)
            .await
            .map_err(AppError::from)?;
        self.last_run = now;
        for c in contacts {
            let date = c.sent_at.with_timezone(&self.tz).date_naive();
            let nth = self.count_contact(&c.borrower_id, date);
            let cured_lately = self
                .cured
                .get(&c.borrower_id)
                .is_some_and(|d| (date - *d).num_days() < 7);
            if cured_lately || !pays_on_own(self.model, self.seed, &c.borrower_id, date, nth) {
                continue;
            }
            let (owed, agreement) = rows::owed_by(&mut conn, &c.loan_id, date + Days::new(3))
                .await
                .map_err(AppError::from)?;
            let target = agreement.and_then(|a| Some((*self.sim_of.get(&a)?, a)));
            if let Some((sim, agreement)) = target {
                self.sims.sims[sim].deposit(&agreement, date, owed);
                self.cured.insert(c.borrower_id.clone(), date);
            }
        }
        Ok(())
    }

    /// Record a contact; its position among the borrower's contacts of the last 7 days.
    fn count_contact(&mut self, borrower: &str, date: NaiveDate) -> u32 {
        let q = self.recent.entry(borrower.to_string()).or_default();
        while q.front().is_some_and(|d| (date - *d).num_days() >= 7) {
            q.pop_front();
        }
        q.push_back(date);
        q.len() as u32
    }
}

async fn figures_of(
    engine: &Engine,
    plan: &Plan,
    policy: &Policy,
) -> Result<Figures, SimulateError> {
    let mut conn = engine.db.pool.acquire().await.map_err(AppError::from)?;
    let c = &mut *conn;
    let insts = rows::installment_rows(c).await.map_err(AppError::from)?;
    let attempts = rows::attempt_rows(c).await.map_err(AppError::from)?;
    let notices = rows::notice_rows(c).await.map_err(AppError::from)?;
    let (loans, collections) = rows::loan_counts(c).await.map_err(AppError::from)?;
    let frame = Frame {
        policy: policy.name.clone(),
        start: plan.start,
        days: plan.days,
        quiet: crate::domain::notice::quiet_windows(policy),
        daily_cap: policy.notices.daily_cap,
        costs: plan.model.costs.clone(),
    };
    Ok(compute(
        &frame,
        loans,
        collections,
        &insts,
        &attempts,
        &notices,
    ))
}
