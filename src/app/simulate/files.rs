//! The outputs of a simulation: a CSV per table, `figures.json`, a self-contained HTML report
//! (inline SVG, no network) and the terminal summary. Everything here is a pure function of
//! the figures, written in a fixed order, so the same figures give the same bytes.

use super::Plan;
use crate::app::AppError;
use crate::domain::simulation::figures::{Figures, DPD_BUCKETS};
use rust_decimal::Decimal;
use std::fmt::Write as _;
use std::path::Path;

pub const REPORT: &str = "report.html";
pub const CSV_FILES: [&str; 6] = [
    "recovery.csv",
    "attempts.csv",
    "money.csv",
    "overdue.csv",
    "outcome.csv",
    "protection.csv",
];

/// Write every file into `out`.
pub fn write_all(out: &Path, plan: &Plan, figs: &[Figures]) -> Result<(), AppError> {
    let write = |name: &str, body: String| {
        let path = out.join(name);
        std::fs::write(&path, body).map_err(|e| AppError::io(&path, e))
    };
    for (name, body) in CSV_FILES.iter().zip(csv_tables(figs)) {
        write(name, body)?;
    }
    write("figures.json", figures_json(figs))?;
    write(REPORT, report_html(&title(plan), figs))
}

/// The figures as JSON (what `--publish` stores and the API serves).
pub fn figures_json(figs: &[Figures]) -> String {
    serde_json::to_string_pretty(figs).expect("figures serialise")
}

/// The inputs in words.
pub fn title(plan: &Plan) -> String {
    let names: Vec<&str> = plan.policies.iter().map(|p| p.name.as_str()).collect();
    format!(
        "{} loans, {} days from {}, seed {}: {}",
        plan.loans.len(),
        plan.days,
        plan.start,
        plan.seed,
        names.join(" vs ")
    )
}

fn csv_of(header: &[&str], rows: Vec<Vec<String>>) -> String {
    let mut w = csv::Writer::from_writer(Vec::new());
    w.write_record(header).expect("in memory");
    for r in rows {
        w.write_record(&r).expect("in memory");
    }
    String::from_utf8(w.into_inner().expect("in memory")).expect("utf-8")
}

fn s(v: &dyn ToString) -> String {
    v.to_string()
}

/// The six tables, in `CSV_FILES` order.
pub fn csv_tables(figs: &[Figures]) -> Vec<String> {
    vec![
        recovery_csv(figs),
        attempts_csv(figs),
        money_csv(figs),
        overdue_csv(figs),
        outcome_csv(figs),
        protection_csv(figs),
    ]
}

fn recovery_csv(figs: &[Figures]) -> String {
    let rows = figs.iter().flat_map(|f| {
        f.recovery.iter().map(move |c| {
            let (day, date) = (s(&c.day), s(&c.date));
            vec![
                s(&f.policy),
                s(&c.currency),
                day,
                date,
                s(&c.recovered),
                s(&c.fell_due),
                s(&c.share),
            ]
        })
    });
    let header = [
        "policy",
        "currency",
        "day",
        "date",
        "recovered",
        "fell_due",
        "share",
    ];
    csv_of(&header, rows.collect())
}

fn attempts_csv(figs: &[Figures]) -> String {
    let mut rows = Vec::new();
    for f in figs {
        let groups = [
            ("first", std::slice::from_ref(&f.first_attempt)),
            ("kind", &f.by_kind[..]),
            ("step", &f.by_step[..]),
        ];
        for (group, list) in groups {
            for r in list {
                rows.push(vec![
                    s(&f.policy),
                    s(&group),
                    s(&r.key),
                    s(&r.attempts),
                    s(&r.succeeded),
                    s(&r.share),
                ]);
            }
        }
    }
    csv_of(
        &["policy", "group", "key", "attempts", "succeeded", "share"],
        rows,
    )
}

fn money_csv(figs: &[Figures]) -> String {
    let rows = figs.iter().flat_map(|f| {
        f.money.iter().map(move |m| {
            vec![
                s(&f.policy),
                s(&m.currency),
                s(&m.fell_due),
                s(&m.recovered),
                s(&m.recovered_share),
                s(&m.penalty_charged),
                s(&m.overdue_at_end),
                s(&m.attempts),
                s(&m.attempt_fees),
                s(&m.success_fees),
                s(&m.sms_sent),
                s(&m.sms_cost),
                s(&m.emails_sent),
                s(&m.email_cost),
                s(&m.total_cost),
            ]
        })
    });
    let header = [
        "policy",
        "currency",
        "fell_due",
        "recovered",
        "recovered_share",
        "penalty_charged",
        "overdue_at_end",
        "attempts",
        "attempt_fees",
        "success_fees",
        "sms_sent",
        "sms_cost",
        "emails_sent",
        "email_cost",
        "total_cost",
    ];
    csv_of(&header, rows.collect())
}

fn overdue_csv(figs: &[Figures]) -> String {
    let rows = figs.iter().flat_map(|f| {
        f.overdue.iter().map(move |b| {
            vec![
                s(&f.policy),
                s(&b.bucket),
                s(&b.currency),
                s(&b.loans),
                s(&b.amount),
            ]
        })
    });
    csv_of(
        &["policy", "bucket", "currency", "loans", "amount"],
        rows.collect(),
    )
}

fn outcome_csv(figs: &[Figures]) -> String {
    let mut rows = Vec::new();
    for f in figs {
        for (bucket, n) in &f.dpd {
            rows.push(vec![s(&f.policy), s(bucket), s(n)]);
        }
        rows.push(vec![
            s(&f.policy),
            "handed_to_collections".into(),
            s(&f.handed_to_collections),
        ]);
    }
    csv_of(&["policy", "bucket", "loans"], rows)
}

fn protection_csv(figs: &[Figures]) -> String {
    let rows = figs.iter().map(|f| {
        let x = &f.protection;
        vec![
            s(&f.policy),
            s(&x.contacts_in_quiet_hours),
            s(&x.borrowers_over_daily_cap),
            s(&x.attempts_after_hard_failure),
            s(&x.contacts_per_borrower_max),
            s(&x.contacts_per_borrower_p95),
        ]
    });
    let header = [
        "policy",
        "contacts_in_quiet_hours",
        "borrowers_over_daily_cap",
        "attempts_after_hard_failure",
        "contacts_per_borrower_max",
        "contacts_per_borrower_p95",
    ];
    csv_of(&header, rows.collect())
}

fn pct(share: Decimal) -> String {
    format!("{:.1} %", share * Decimal::ONE_HUNDRED)
}

/// The side-by-side summary: one row per figure, one column per policy.
pub fn summary_rows(figs: &[Figures]) -> Vec<(String, Vec<String>)> {
    let mut rows: Vec<(String, Vec<String>)> = Vec::new();
    let mut row = |label: String, f: &dyn Fn(&Figures) -> String| {
        rows.push((label, figs.iter().map(f).collect()))
    };
    let currencies: std::collections::BTreeSet<String> = figs
        .iter()
        .flat_map(|f| f.money.iter().map(|m| m.currency.clone()))
        .collect();
    for c in &currencies {
        let m = |f: &Figures| {
            f.money
                .iter()
                .find(|m| &m.currency == c)
                .cloned()
                .unwrap_or_default()
        };
        row(format!("recovered {c}"), &|f| {
            format!("{} ({})", m(f).recovered, pct(m(f).recovered_share))
        });
        row(format!("overdue at end {c}"), &|f| {
            m(f).overdue_at_end.to_string()
        });
        row(format!("penalty charged {c}"), &|f| {
            m(f).penalty_charged.to_string()
        });
        row(format!("cost {c}"), &|f| m(f).total_cost.to_string());
    }
    row("first-attempt success".into(), &|f| {
        pct(f.first_attempt.share)
    });
    row("attempts".into(), &|f| {
        f.money.iter().map(|m| m.attempts).sum::<u64>().to_string()
    });
    row("sms / emails".into(), &|f| {
        let (s, e) = f
            .money
            .iter()
            .fold((0, 0), |a, m| (a.0 + m.sms_sent, a.1 + m.emails_sent));
        format!("{s} / {e}")
    });
    row("contacts per borrower max / p95".into(), &|f| {
        format!(
            "{} / {}",
            f.protection.contacts_per_borrower_max, f.protection.contacts_per_borrower_p95
        )
    });
    row("contacts in quiet hours".into(), &|f| {
        f.protection.contacts_in_quiet_hours.to_string()
    });
    row("borrowers over the daily cap".into(), &|f| {
        f.protection.borrowers_over_daily_cap.to_string()
    });
    row("attempts after a hard failure".into(), &|f| {
        f.protection.attempts_after_hard_failure.to_string()
    });
    for b in &DPD_BUCKETS[1..] {
        row(format!("loans {b} days past due"), &|f| {
            f.dpd
                .iter()
                .find(|(n, _)| n == b)
                .map_or(0, |(_, n)| *n)
                .to_string()
        });
    }
    row("handed to collections".into(), &|f| {
        f.handed_to_collections.to_string()
    });
    rows
}

/// The terminal table.
pub fn terminal_table(figs: &[Figures]) -> String {
    let rows = summary_rows(figs);
    let label_w = rows.iter().map(|(l, _)| l.len()).max().unwrap_or(0);
    let col_w: Vec<usize> = (0..figs.len())
        .map(|i| {
            rows.iter()
                .map(|(_, v)| v[i].len())
                .chain([figs[i].policy.len()])
                .max()
                .unwrap_or(0)
        })
        .collect();
    let mut out = format!("{:label_w$}", "");
    for (f, w) in figs.iter().zip(&col_w) {
        let _ = write!(out, "  {:>w$}", f.policy);
    }
    out.push('\n');
    for (label, values) in rows {
        let _ = write!(out, "{label:label_w$}");
        for (v, w) in values.iter().zip(&col_w) {
            let _ = write!(out, "  {v:>w$}");
        }
        out.push('\n');
    }
    out
}

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

const COLOURS: [&str; 6] = [
    "#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b",
];

/// The report page: summary table, recovery curves, buckets, cost against recovery.
pub fn report_html(title: &str, figs: &[Figures]) -> String {
    let mut h = String::new();
    let _ = write!(
        h,
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>repayd simulation</title>\
         <style>body{{font-family:sans-serif;margin:2em;max-width:1100px}}table{{border-collapse:collapse}}\
         td,th{{border:1px solid #ccc;padding:4px 8px;text-align:right}}td:first-child,th:first-child{{text-align:left}}\
         svg{{background:#fafafa;border:1px solid #ddd;margin:0.5em 0}}</style></head><body>\
         <h1>Policy simulation</h1><p id=\"inputs\">{}</p>",
        esc(title)
    );
    h.push_str(&summary_table(figs));
    let currencies: std::collections::BTreeSet<&str> = figs
        .iter()
        .flat_map(|f| f.money.iter().map(|m| m.currency.as_str()))
        .collect();
    for c in currencies {
        let _ = write!(h, "<h2>{}</h2>", esc(c));
        h.push_str(&curve_svg(c, figs));
        h.push_str(&buckets_svg(c, figs));
        h.push_str(&cost_svg(c, figs));
    }
    h.push_str("</body></html>\n");
    h
}

fn summary_table(figs: &[Figures]) -> String {
    let mut h = String::from("<table id=\"summary\"><tr><th></th>");
    for f in figs {
        let _ = write!(h, "<th>{}</th>", esc(&f.policy));
    }
    h.push_str("</tr>");
    for (label, values) in summary_rows(figs) {
        let _ = write!(h, "<tr><td>{}</td>", esc(&label));
        for v in values {
            let _ = write!(h, "<td>{}</td>", esc(&v));
        }
        h.push_str("</tr>");
    }
    h.push_str("</table>");
    h
}

fn legend(figs: &[Figures], y0: f64) -> String {
    let mut h = String::new();
    for (i, f) in figs.iter().enumerate() {
        let y = y0 + 16.0 * i as f64;
        let _ = write!(
            h,
            "<rect x=\"70\" y=\"{:.0}\" width=\"10\" height=\"10\" fill=\"{c}\"/><text x=\"86\" y=\"{:.0}\" font-size=\"12\">{}</text>",
            y - 9.0,
            y,
            esc(&f.policy),
            c = COLOURS[i % COLOURS.len()]
        );
    }
    h
}

fn as_f64(d: Decimal) -> f64 {
    d.to_string().parse().unwrap_or(0.0)
}

/// Recovered as a share of what fell due, by day, one line per policy.
fn curve_svg(currency: &str, figs: &[Figures]) -> String {
    let (w, hgt, left, top) = (640.0, 260.0, 50.0, 20.0);
    let mut h = format!(
        "<h3>Recovery curve</h3><svg class=\"curve\" width=\"{w}\" height=\"{}\" viewBox=\"0 0 {w} {}\">\
         <line x1=\"{left}\" y1=\"{}\" x2=\"{}\" y2=\"{}\" stroke=\"#333\"/><line x1=\"{left}\" y1=\"{top}\" x2=\"{left}\" y2=\"{}\" stroke=\"#333\"/>\
         <text x=\"4\" y=\"{}\" font-size=\"11\">100 %</text><text x=\"14\" y=\"{}\" font-size=\"11\">0 %</text>",
        hgt + 60.0, hgt + 60.0, top + hgt, left + 560.0, top + hgt, top + hgt, top + 4.0, top + hgt
    );
    for (i, f) in figs.iter().enumerate() {
        let pts: Vec<String> = f
            .recovery
            .iter()
            .filter(|p| p.currency == currency)
            .map(|p| {
                let x = left + 560.0 * f64::from(p.day) / f64::from(f.days.max(1));
                let y = top + hgt - hgt * as_f64(p.share.min(Decimal::ONE));
                format!("{x:.1},{y:.1}")
            })
            .collect();
        let _ = write!(
            h,
            "<polyline fill=\"none\" stroke-width=\"2\" stroke=\"{}\" points=\"{}\"/>",
            COLOURS[i % COLOURS.len()],
            pts.join(" ")
        );
    }
    h.push_str(&legend(figs, top + hgt + 22.0));
    h.push_str("</svg>");
    h
}

/// Overdue amount at the end by bucket, one bar per policy in each bucket.
fn buckets_svg(currency: &str, figs: &[Figures]) -> String {
    let amount = |f: &Figures, b: &str| {
        f.overdue
            .iter()
            .find(|r| r.bucket == b && r.currency == currency)
            .map_or(Decimal::ZERO, |r| r.amount)
    };
    let max = figs
        .iter()
        .flat_map(|f| DPD_BUCKETS[1..].iter().map(move |b| amount(f, b)))
        .max()
        .unwrap_or_default()
        .max(Decimal::ONE);
    let (hgt, top) = (200.0, 20.0);
    let mut h = format!("<h3>Overdue at the end, by days past due</h3><svg class=\"buckets\" width=\"640\" height=\"{}\">", hgt + 80.0);
    for (bi, b) in DPD_BUCKETS[1..].iter().enumerate() {
        let x0 = 60.0 + 140.0 * bi as f64;
        let _ = write!(
            h,
            "<text x=\"{x0}\" y=\"{}\" font-size=\"12\">{b}</text>",
            top + hgt + 16.0
        );
        for (i, f) in figs.iter().enumerate() {
            let v = amount(f, b);
            let bar = hgt * as_f64(v / max);
            let _ = write!(
                h,
                "<rect x=\"{:.0}\" y=\"{:.1}\" width=\"18\" height=\"{bar:.1}\" fill=\"{}\"><title>{}: {v}</title></rect>",
                x0 + 20.0 * i as f64,
                top + hgt - bar,
                COLOURS[i % COLOURS.len()],
                esc(&f.policy)
            );
        }
    }
    h.push_str(&legend(figs, top + hgt + 36.0));
    h.push_str("</svg>");
    h
}

/// Each policy as a point: what it cost against what it recovered.
fn cost_svg(currency: &str, figs: &[Figures]) -> String {
    let pick = |f: &Figures| {
        f.money
            .iter()
            .find(|m| m.currency == currency)
            .cloned()
            .unwrap_or_default()
    };
    let max_cost = figs
        .iter()
        .map(|f| pick(f).total_cost)
        .max()
        .unwrap_or_default()
        .max(Decimal::ONE);
    let max_rec = figs
        .iter()
        .map(|f| pick(f).recovered)
        .max()
        .unwrap_or_default()
        .max(Decimal::ONE);
    let mut h = String::from(
        "<h3>Cost against recovery</h3><svg class=\"cost\" width=\"640\" height=\"340\">\
         <line x1=\"50\" y1=\"240\" x2=\"610\" y2=\"240\" stroke=\"#333\"/><line x1=\"50\" y1=\"20\" x2=\"50\" y2=\"240\" stroke=\"#333\"/>\
         <text x=\"300\" y=\"258\" font-size=\"11\">cost</text><text x=\"4\" y=\"30\" font-size=\"11\">recovered</text>",
    );
    for (i, f) in figs.iter().enumerate() {
        let m = pick(f);
        let x = 50.0 + 540.0 * as_f64(m.total_cost / max_cost);
        let y = 240.0 - 200.0 * as_f64(m.recovered / max_rec);
        let _ = write!(
            h,
            "<circle cx=\"{x:.1}\" cy=\"{y:.1}\" r=\"6\" fill=\"{}\"><title>{}: cost {}, recovered {}</title></circle>",
            COLOURS[i % COLOURS.len()],
            esc(&f.policy),
            m.total_cost,
            m.recovered
        );
    }
    h.push_str(&legend(figs, 276.0));
    h.push_str("</svg>");
    h
}
