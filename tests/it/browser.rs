//! The dashboard in a real headless Chromium, driven over WebDriver (chromedriver) with
//! fantoccini, against the daemon's router served on loopback with a fresh SQLite database;
//! and every page over plain HTTP on SQLite and PostgreSQL.
//!
//! Needs Debian's `chromium` and `chromium-driver` (`.ci/run` installs them); without them
//! the test fails and says so.

use crate::common;

use chrono::{Datelike, Days, NaiveDate, Utc};
use common::{loan_json, local, spawn_app, Backend, TestApp};
use fantoccini::{Client, ClientBuilder, Locator};
use futures::FutureExt;
use repayd::adapters::channel::Scenario;
use repayd::app::simulated_engine;
use repayd::engine::{Engine, EngineConfig};
use repayd::web::app as router;
use repayd::web::auth::{create_token, Role};
use repayd::web::DaemonState;
use std::panic::AssertUnwindSafe;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

const SH: &str = "Asia/Shanghai";
/// The fixtures' full phone and account numbers: no page may show them.
const PHONE: &str = "13812345678";
const ACCOUNT: &str = "6222021234567890";
/// A borrower name that is markup: pages must show it as text.
const HOSTILE_NAME: &str = "<img src=x onerror=alert(1)> Ann & \"Co\"";
const WAIT: Duration = Duration::from_secs(20);

/// chromedriver on a free port, killed when dropped.
struct Driver {
    child: Child,
    url: String,
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

async fn start_chromedriver() -> Driver {
    let port = free_port();
    let child = Command::new("chromedriver")
        .arg(format!("--port={port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| {
            panic!(
                "cannot start chromedriver ({e}). The browser test needs Debian's Chromium and its \
                 driver: `apt-get install -y chromium chromium-driver` (.ci/run installs them)"
            )
        });
    let driver = Driver {
        child,
        url: format!("http://127.0.0.1:{port}"),
    };
    let start = Instant::now();
    while tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .is_err()
    {
        assert!(
            start.elapsed() < WAIT,
            "chromedriver did not listen on port {port}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    driver
}

async fn browser(driver: &Driver) -> Client {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let mut caps = serde_json::Map::new();
    caps.insert(
        "goog:chromeOptions".into(),
        serde_json::json!({
            "args": ["--headless=new", "--no-sandbox", "--disable-gpu", "--window-size=1400,1000",
                     "--disable-dev-shm-usage", "--lang=en-US"],
        }),
    );
    ClientBuilder::rustls()
        .expect("TLS roots for the WebDriver client")
        .capabilities(caps)
        .connect(&driver.url)
        .await
        .unwrap_or_else(|e| panic!("chromedriver could not start Chromium: {e}"))
}

/// The app under test: the daemon's router on a random loopback port over the test
/// app's database. The test drives runs with the test app's engine and clock.
struct Site {
    base: String,
    app: TestApp,
    due: NaiveDate,
}

impl Site {
    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    fn pool(&self) -> &sqlx::AnyPool {
        &self.app.engine.db.pool
    }
}

const SCENARIO: &str = r#"timezone = "Asia/Shanghai"
[[accounts]]
agreement = "AGR-1"
balance = "5000.00"
[[accounts]]
agreement = "AGR-2"
balance = "760.00"
[[accounts]]
agreement = "AGR-3"
fail = "CARD_FROZEN"
[[accounts]]
agreement = "AGR-4"
balance = "0.00"
"#;

/// The engine behind the served API: the same database and policies as the test app's.
fn served_engine(app: &TestApp) -> Arc<Engine> {
    let scenario = Scenario::from_toml_str(SCENARIO, "browser scenario").expect("scenario");
    let log = app.dir.path().join("api-notices.log");
    let (engine, _sims) = simulated_engine(
        app.engine.db.clone(),
        (*app.engine.policies).clone(),
        scenario,
        None,
        &log,
        EngineConfig::default(),
    )
    .expect("engine");
    Arc::new(engine)
}

/// Four loans due in the future (so every instant the engine writes is later than the real
/// clock): L1 is paid in full, L2 in steps, L3's card is frozen, L4 was due ten days earlier
/// and cannot pay.
async fn start_site(backend: Backend) -> Site {
    let due = Utc::now().date_naive() + Days::new(30);
    let earlier = due - Days::new(10);
    let app = spawn_app(backend, SCENARIO).await;
    let loan = |id: &str, agreement: &str, due: &NaiveDate, principal: &str| {
        let mandates = [("unionpay", agreement)];
        let installments = [(due.to_string(), principal)];
        let inst: Vec<(&str, &str)> = installments.iter().map(|(d, p)| (d.as_str(), *p)).collect();
        loan_json(id, SH, "standard", None, false, &mandates, &inst)
    };
    let mut l4 = loan("L4", "AGR-4", &earlier, "800.00");
    l4["borrower"]["name"] = serde_json::json!(HOSTILE_NAME);
    let loans = serde_json::json!([
        loan("L1", "AGR-1", &due, "1000.00"),
        loan("L2", "AGR-2", &due, "1000.00"),
        loan("L3", "AGR-3", &due, "500.00"),
        l4,
    ]);
    app.import_json(&loans.to_string()).await;
    let state = repayd::app::daemon::api_state(
        served_engine(&app),
        Arc::new(DaemonState::default()),
        &repayd::app::config::Config::default(),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let base = format!("http://{}", listener.local_addr().unwrap());
    let service = router(state).into_make_service_with_connect_info::<std::net::SocketAddr>();
    tokio::spawn(async move { axum::serve(listener, service).await });
    Site { base, app, due }
}

/// The due date's 08:05 in Shanghai, when the due slot runs.
fn due_slot(site: &Site) -> chrono::DateTime<Utc> {
    let d = site.due;
    local(SH, d.year(), d.month(), d.day(), 8, 5)
}

async fn token(site: &Site, name: &str, role: Role) -> String {
    let mut conn = site.pool().acquire().await.unwrap();
    create_token(&mut conn, name, role, Utc::now().timestamp_millis())
        .await
        .expect("token")
        .1
}

/// Wait until `check` returns true; panics after [`WAIT`] with `what`.
async fn wait_until<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let start = Instant::now();
    while !check().await {
        assert!(start.elapsed() < WAIT, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

async fn text_of(c: &Client, css: &str) -> String {
    match c.find(Locator::Css(css)).await {
        Ok(e) => e.text().await.unwrap_or_default(),
        Err(_) => String::new(),
    }
}

async fn login(c: &Client, site: &Site, token: &str) {
    c.goto(&site.url("/")).await.unwrap();
    assert_eq!(
        c.current_url().await.unwrap().path(),
        "/login",
        "a page without a session sends the browser to the login form"
    );
    c.find(Locator::Id("token"))
        .await
        .unwrap()
        .send_keys(token)
        .await
        .unwrap();
    c.find(Locator::Id("login-submit"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    c.wait()
        .at_most(WAIT)
        .for_element(Locator::Id("feed"))
        .await
        .expect("the dashboard after login");
    assert_eq!(c.current_url().await.unwrap().path(), "/");
}

fn assert_masked(page: &str, html: &str) {
    for full in [PHONE, ACCOUNT, "t@example.com"] {
        assert!(!html.contains(full), "{page} shows an unmasked {full}");
    }
}

fn artifacts() -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/artifacts");
    std::fs::create_dir_all(&dir).expect("target/artifacts");
    dir
}

/// A bad token is refused on the form, and stays on the login page.
async fn bad_token_is_refused(c: &Client, site: &Site) {
    c.goto(&site.url("/login")).await.unwrap();
    c.find(Locator::Id("token"))
        .await
        .unwrap()
        .send_keys("rpd_not_a_token")
        .await
        .unwrap();
    c.find(Locator::Id("login-submit"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    let err = c
        .wait()
        .at_most(WAIT)
        .for_element(Locator::Id("login-error"))
        .await
        .expect("an error on the login form");
    assert!(err.text().await.unwrap().contains("not valid"));
    assert!(c.find(Locator::Id("feed")).await.is_err());
    c.goto(&site.url("/")).await.unwrap();
    assert_eq!(c.current_url().await.unwrap().path(), "/login");
}

/// The feed shows an attempt the engine makes while the page is open.
async fn feed_updates_live(c: &Client, site: &Site) {
    // The due date's page, open before the engine runs: its tiles must update by themselves.
    c.goto(&site.url(&format!("/?date={}", site.due)))
        .await
        .unwrap();
    let full = || async { text_of(c, "#tiles .tile-full .n").await };
    assert_eq!(full().await, "0", "nothing collected before the run");
    let rows = c
        .find_all(Locator::Css("#feed-rows tr[data-id]"))
        .await
        .unwrap();
    assert!(rows.is_empty(), "no attempt before the engine runs");
    wait_until("the event stream to connect", || async {
        c.find(Locator::Css("#feed-status[data-state=live]"))
            .await
            .is_ok()
    })
    .await;
    let summary = site.app.run(due_slot(site)).await;
    assert!(summary.total_attempts() >= 4, "attempts made: {summary:?}");
    wait_until("L1's successful attempt in the feed", || async {
        let t = text_of(c, "#feed-rows").await;
        t.lines()
            .any(|l| l.contains("L1") && l.contains("succeeded") && l.contains("1000.00"))
    })
    .await;
    wait_until("L3's hard failure in the feed", || async {
        let t = text_of(c, "#feed-rows").await;
        t.lines()
            .any(|l| l.contains("L3") && l.contains("failed") && l.contains("CARD_FROZEN"))
    })
    .await;
    let feed = text_of(c, "#feed-rows").await;
    assert!(
        feed.contains("6222 **** **** 7890"),
        "masked account in the feed: {feed}"
    );
    wait_until("the tiles to update without a reload", || async {
        full().await == "1"
    })
    .await;
    let rebind = text_of(c, "#rebind").await;
    assert!(
        rebind.contains("L3"),
        "the re-binding list is live too: {rebind}"
    );
    assert_masked("the live feed", &c.source().await.unwrap());
}

/// Today's tiles, buckets, rates and the re-binding list for the due date.
async fn dashboard_figures(c: &Client, site: &Site) {
    c.goto(&site.url(&format!("/?date={}", site.due)))
        .await
        .unwrap();
    let tile =
        |key: &'static str| async move { text_of(c, &format!("#tiles .tile-{key} .n")).await };
    assert_eq!(tile("due").await, "3", "L1, L2 and L3 fall due");
    assert_eq!(tile("full").await, "1", "L1 in full");
    assert_eq!(tile("steps").await, "1", "L2 in steps");
    assert_eq!(tile("hard").await, "1", "L3's frozen card");
    // One installment, however many ladder steps it failed; L2's failed full amount was then
    // collected in steps, so it is not a failure.
    assert_eq!(tile("soft").await, "1", "L4 failed soft");
    let rebind = text_of(c, "#rebind").await;
    assert!(
        rebind.contains("L3") && rebind.contains("CARD_FROZEN"),
        "{rebind}"
    );
    let buckets = text_of(c, "#buckets").await;
    // L4's 800.00 plus the penalty accrued since it fell due.
    assert!(
        buckets.contains("M1") && buckets.contains("CNY 80") && buckets.contains("· 1 loan"),
        "{buckets}"
    );
    let rates = text_of(c, "#rates").await;
    assert!(rates.contains("unionpay"), "{rates}");
    // Thirty days of trends ending on the chosen day, money per currency.
    let trends = text_of(c, "#trends").await;
    assert!(
        trends.contains("Collected per day (CNY)") && trends.contains("Success rate per day"),
        "{trends}"
    );
    assert!(
        trends.contains("top: 20") && trends.contains(": CNY "),
        "{trends}"
    );
    let columns = c
        .find_all(Locator::Css("#trends svg rect.bar"))
        .await
        .unwrap()
        .len();
    assert_eq!(columns, 60, "30 days collected (CNY) and 30 days of rates");
    let png = c.screenshot().await.expect("screenshot");
    std::fs::write(artifacts().join("dashboard.png"), png).expect("write screenshot");
    c.execute(
        "document.getElementById('trends').scrollIntoView();",
        vec![],
    )
    .await
    .unwrap();
    let png = c.screenshot().await.expect("screenshot");
    std::fs::write(artifacts().join("trends.png"), png).expect("write screenshot");
    // The rates follow the date picker: forty days before, nothing was attempted.
    let before = site.due - Days::new(40);
    c.goto(&site.url(&format!("/?date={before}")))
        .await
        .unwrap();
    let rates = text_of(c, "#rates").await;
    assert!(
        !rates.contains("unionpay"),
        "no attempts on {before}: {rates}"
    );
}

/// Clicking the M1 bucket's bar opens the worklist filtered to M1 (L4, 800 overdue); the
/// worklist sorts by days past due and refuses an unknown order by name.
async fn worklist_from_a_bucket_bar(c: &Client, site: &Site) {
    let later = site.due + Days::new(5);
    c.goto(&site.url(&format!("/?date={later}"))).await.unwrap();
    c.find(Locator::Css("#buckets a.bar-link"))
        .await
        .expect("a bucket bar links")
        .click()
        .await
        .unwrap();
    wait_until("the worklist page", || async {
        c.current_url().await.is_ok_and(|u| u.path() == "/worklist")
    })
    .await;
    let url = c.current_url().await.unwrap();
    assert!(url.query().unwrap_or("").contains("bucket=M1"), "{url}");
    let table = text_of(c, "#worklist").await;
    let src = c.source().await.unwrap_or_default();
    assert!(
        table.contains("L4") && table.contains("M1") && table.contains("overdue"),
        "{table}\n{url}\n{src}"
    );
    assert!(!table.contains("L1"), "L1 is paid, not in M1: {table}");
    c.goto(&site.url(&format!("/worklist?sort=dpd&date={later}")))
        .await
        .unwrap();
    let dpds: Vec<u32> = {
        let mut v = Vec::new();
        for row in c
            .find_all(Locator::Css("#worklist tbody tr"))
            .await
            .unwrap()
        {
            v.push(
                row.attr("data-dpd")
                    .await
                    .unwrap()
                    .unwrap()
                    .parse()
                    .unwrap(),
            );
        }
        v
    };
    assert!(
        !dpds.is_empty() && dpds.windows(2).all(|w| w[0] >= w[1]),
        "{dpds:?}"
    );
    let png = c.screenshot().await.expect("screenshot");
    std::fs::write(artifacts().join("worklist.png"), png).expect("write screenshot");
    c.goto(&site.url("/worklist?sort=colour")).await.unwrap();
    let page = c.source().await.unwrap();
    assert!(page.contains("sort: `colour` is not one of"), "{page}");
}

/// A collections user pauses L4 from its page; the action lands in the audit log, on the
/// page and in the table.
async fn pause_from_loan_page(c: &Client, site: &Site) {
    c.goto(&site.url("/loans/L4")).await.unwrap();
    let until = (site.due + Days::new(20)).to_string();
    // Date inputs take typed text in the browser's locale format; set the value directly.
    c.execute(
        "document.getElementById('pause-until').value = arguments[0];",
        vec![serde_json::json!(until)],
    )
    .await
    .unwrap();
    c.find(Locator::Id("pause-reason"))
        .await
        .unwrap()
        .send_keys("promise to pay on the 20th")
        .await
        .unwrap();
    c.find(Locator::Id("pause-submit"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    let banner = match c
        .wait()
        .at_most(WAIT)
        .for_element(Locator::Id("pause-banner"))
        .await
    {
        Ok(b) => b,
        Err(e) => panic!(
            "no pause banner ({e}); the page says: {}",
            text_of(c, "#action-error").await
        ),
    };
    let banner = banner.text().await.unwrap();
    assert!(banner.contains(&until), "{banner}");
    assert!(banner.contains("promise to pay"), "{banner}");
    let audit = text_of(c, "#audit").await;
    assert!(audit.contains("pause"), "audit on the page: {audit}");
    assert!(audit.contains("ops-collections") && audit.contains("promise to pay on the 20th"));
    let (actor, role, action, reason): (String, String, String, Option<String>) = sqlx::query_as(
        "SELECT actor, role, action, reason FROM audit_log WHERE loan_id = 'L4' ORDER BY id DESC",
    )
    .fetch_one(site.pool())
    .await
    .expect("an audit row for L4");
    assert_eq!(
        (actor.as_str(), role.as_str()),
        ("ops-collections", "collections")
    );
    assert!(action.contains("pause"), "action {action}");
    assert_eq!(reason.as_deref(), Some("promise to pay on the 20th"));
    assert_masked("the loan page", &c.source().await.unwrap());
    let png = c.screenshot().await.expect("screenshot");
    std::fs::write(artifacts().join("loan.png"), png).expect("write screenshot");
}

/// Resume L4 and make a manual attempt on L2 from their pages; both are audited.
async fn resume_and_manual_attempt(c: &Client, site: &Site) {
    c.goto(&site.url("/loans/L4")).await.unwrap();
    fill(c, "resume-reason", "borrower paid at the branch").await;
    click(c, "resume-submit").await;
    wait_until("the pause to end", || async {
        c.find(Locator::Id("pause-banner")).await.is_err()
            && text_of(c, "#audit").await.contains("resume")
    })
    .await;
    c.goto(&site.url("/loans/L2")).await.unwrap();
    fill(c, "manual-amount", "100.00").await;
    fill(c, "manual-reason", "borrower asked on the phone").await;
    click(c, "manual-submit").await;
    c.accept_alert().await.expect("the confirmation dialog");
    wait_until("the manual attempt on the page", || async {
        text_of(c, "#audit").await.contains("manual_attempt")
    })
    .await;
    let attempts = text_of(c, "#attempts").await;
    assert!(attempts.contains("100.00"), "{attempts}");
    // Grouped by slot: the manual attempt is a slot of its own, its step under it, every
    // amount with its currency; the page opens with the loan's standing.
    assert!(
        attempts.contains("manual · 1 step") && attempts.contains("CNY 100.00"),
        "{attempts}"
    );
    let summary = text_of(c, "#loan-summary").await;
    assert!(
        summary.contains("Next due") && summary.contains("Total overdue: CNY"),
        "{summary}"
    );
    let n: i64 = sqlx::query_scalar(
        "SELECT COUNT(*) FROM attempts WHERE loan_id = 'L2' AND requested_by = 'ops-collections'",
    )
    .fetch_one(site.pool())
    .await
    .unwrap();
    assert_eq!(
        n, 1,
        "one manual attempt, requested by the collections user"
    );
}

async fn fill(c: &Client, id: &str, text: &str) {
    c.find(Locator::Id(id))
        .await
        .unwrap()
        .send_keys(text)
        .await
        .unwrap();
}

async fn click(c: &Client, id: &str) {
    c.find(Locator::Id(id))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
}

/// A promise to pay recorded from a loan's page reads open; promises made earlier read kept
/// (what was collected since reaches them) or broken (their date passed unpaid) on their
/// loans' pages.
async fn promises_from_the_loan_page(c: &Client, site: &Site) {
    c.goto(&site.url("/loans/L3")).await.unwrap();
    let by = (chrono::Utc::now().date_naive() + Days::new(5)).to_string();
    c.execute(
        "document.getElementById('promise-date').value = arguments[0];",
        vec![serde_json::json!(by)],
    )
    .await
    .unwrap();
    fill(c, "promise-amount", "50.00").await;
    fill(c, "promise-text", "will pay on Friday").await;
    click(c, "promise-submit").await;
    wait_until("the open promise on the page", || async {
        text_of(c, "#notes").await.contains("open")
    })
    .await;
    let notes = text_of(c, "#notes").await;
    assert!(notes.contains("CNY 50.00 by"), "{notes}");
    let (kept, amount): (String, i64) = sqlx::query_as(
        "SELECT loan_id, CAST(SUM(amount) AS BIGINT) FROM attempts WHERE status = 'succeeded' \
         GROUP BY loan_id ORDER BY loan_id",
    )
    .fetch_optional(site.pool())
    .await
    .unwrap()
    .expect("some loan was collected");
    let broken: String = sqlx::query_scalar(
        "SELECT id FROM loans WHERE id NOT IN \
         (SELECT loan_id FROM attempts WHERE status = 'succeeded') ORDER BY id",
    )
    .fetch_one(site.pool())
    .await
    .unwrap();
    for (id, loan, minor) in [(901, &kept, amount), (902, &broken, 5000)] {
        sqlx::query(
            "INSERT INTO loan_notes (id, loan_id, kind, body, amount, promised_on, created_by, created_at) \
             VALUES ($1, $2, 'promise', 'said so on the phone', $3, '2020-01-01', 'carol', 0)",
        )
        .bind(id as i64)
        .bind(loan.as_str())
        .bind(minor)
        .execute(site.pool())
        .await
        .unwrap();
    }
    for (loan, state) in [(&kept, "kept"), (&broken, "broken")] {
        c.goto(&site.url(&format!("/loans/{loan}"))).await.unwrap();
        let notes = text_of(c, "#notes").await;
        assert!(notes.contains(state), "{loan}: {notes}");
    }
}

/// A viewer reads the loan page but gets no action buttons.
async fn viewer_sees_no_actions(c: &Client, site: &Site, token: &str) {
    login(c, site, token).await;
    c.goto(&site.url("/loans/L1")).await.unwrap();
    c.wait()
        .at_most(WAIT)
        .for_element(Locator::Id("schedule"))
        .await
        .expect("the loan page");
    for id in ["actions", "pause-submit", "resume-submit", "manual-submit"] {
        assert!(
            c.find(Locator::Id(id)).await.is_err(),
            "a viewer must not see #{id}"
        );
    }
    assert!(!c.source().await.unwrap().contains("Attempt now"));
    click(c, "logout").await;
    c.wait()
        .at_most(WAIT)
        .for_element(Locator::Id("login-form"))
        .await
        .expect("the login form after logging out");
    c.goto(&site.url("/loans/L1")).await.unwrap();
    assert_eq!(
        c.current_url().await.unwrap().path(),
        "/login",
        "logged out"
    );
}

/// The count on a tile of the dashboard's HTML.
fn tile_count(html: &str, key: &str) -> i64 {
    let at = html
        .find(&format!("tile-{key}"))
        .unwrap_or_else(|| panic!("no {key} tile"));
    let rest = &html[at..];
    let start = rest.find("class=\"n\">").expect("count") + "class=\"n\">".len();
    let end = rest[start..].find('<').expect("end of count");
    rest[start..start + end].trim().parse().expect("a number")
}

/// Pages fetched as plain HTTP: redirects without a session, no unmasked number anywhere.
async fn pages_over_http(site: &Site, token: &str) {
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let r = http.get(site.url("/loans/L1")).send().await.unwrap();
    assert_eq!(r.status(), 303);
    assert_eq!(r.headers()["location"], "/login?next=%2Floans%2FL1");
    let r = http
        .post(site.url("/login"))
        .form(&[("token", "rpd_wrong")])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    let r = http
        .post(site.url("/login"))
        .form(&[("token", token)])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 303);
    let cookie = r.headers()["set-cookie"].to_str().unwrap().to_string();
    for attr in ["repayd_token=", "HttpOnly", "SameSite=Strict", "Path=/"] {
        assert!(cookie.contains(attr), "cookie {cookie} lacks {attr}");
    }
    let session = cookie.split(';').next().unwrap().to_string();
    let due = format!("/?date={}", site.due);
    for page in [
        "/",
        due.as_str(),
        "/loans",
        "/loans?q=l",
        "/loans/L1",
        "/loans/L3",
        "/loans/L4",
    ] {
        let r = http
            .get(site.url(page))
            .header("cookie", &session)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "{page}");
        assert!(r.headers()["content-security-policy"]
            .to_str()
            .unwrap()
            .contains("script-src 'self'"));
        let html = r.text().await.unwrap();
        assert_masked(page, &html);
        if page == due {
            let tiles: Vec<i64> = ["due", "full", "steps", "hard"]
                .iter()
                .map(|k| tile_count(&html, k))
                .collect();
            assert_eq!(tiles, vec![3, 1, 1, 1], "due, in full, in steps, hard");
            assert!(html.contains("Overdue by bucket (CNY)") && html.contains("step 1"));
        }
        if page == "/loans" || page == "/loans/L4" {
            assert!(!html.contains("<img src=x"), "{page} lets markup through");
            assert!(
                html.contains("&lt;img src=x onerror=alert(1)&gt; Ann &amp; &quot;Co&quot;"),
                "{page} shows the name escaped"
            );
        }
        if page.starts_with("/loans/") {
            assert!(
                html.contains("138****5678"),
                "{page} shows the masked phone"
            );
        }
    }
    let r = http
        .get(site.url("/loans/NOPE"))
        .header("cookie", &session)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dashboard_in_a_real_browser() {
    let driver = start_chromedriver().await;
    let site = start_site(Backend::Sqlite).await;
    let ops = token(&site, "ops-collections", Role::Collections).await;
    let viewer = token(&site, "auditor-viewer", Role::Viewer).await;
    let admin = token(&site, "root-admin", Role::Admin).await;
    let c = browser(&driver).await;
    let v = browser(&driver).await;
    let a = browser(&driver).await;
    let run = AssertUnwindSafe(async {
        bad_token_is_refused(&c, &site).await;
        login(&c, &site, &ops).await;
        feed_updates_live(&c, &site).await;
        dashboard_figures(&c, &site).await;
        worklist_from_a_bucket_bar(&c, &site).await;
        pause_from_loan_page(&c, &site).await;
        resume_and_manual_attempt(&c, &site).await;
        promises_from_the_loan_page(&c, &site).await;
        viewer_sees_no_actions(&v, &site, &viewer).await;
        pages_over_http(&site, &ops).await;
        resolve_case_from_recon_page(&a, &site, &admin).await;
    })
    .catch_unwind()
    .await;
    let _ = c.close().await;
    let _ = v.close().await;
    let _ = a.close().await;
    drop(driver);
    if let Err(panic) = run {
        std::panic::resume_unwind(panic);
    }
}

/// Every page renders on SQLite and PostgreSQL after a run, over plain HTTP.
async fn pages_render(backend: Backend) {
    let site = start_site(backend).await;
    site.app.run(due_slot(&site)).await;
    let ops = token(&site, "ops-collections", Role::Collections).await;
    pages_over_http(&site, &ops).await;
    recon_page_shows_open_cases(&site, &ops).await;
    site.app.cleanup().await;
}

/// The open case of an attempt (as the API shows it).
async fn case_of(site: &Site, attempt: &serde_json::Value) -> i64 {
    sqlx::query_scalar("SELECT id FROM recon_items WHERE order_no = $1 AND case_status = 'open'")
        .bind(attempt["order_no"].as_str().unwrap())
        .fetch_one(site.pool())
        .await
        .unwrap()
}

/// An admin resolves a reconciliation case from `/recon`: the form posts to the API, the
/// page reloads without the case, and the resolution is stored and audited.
async fn resolve_case_from_recon_page(c: &Client, site: &Site, token: &str) {
    login(c, site, token).await;
    let mut conn = site.pool().acquire().await.unwrap();
    let attempt = repayd::store::reports::attempts(&mut conn, None, 1)
        .await
        .unwrap()
        .remove(0);
    drop(conn);
    let attempt = serde_json::to_value(&attempt).unwrap();
    let day = common::web::statement_naming(&site.app.engine, &[(&attempt, "0.01")]).await;
    let case = case_of(site, &attempt).await;
    c.goto(&site.url(&format!("/recon?date={day}")))
        .await
        .unwrap();
    let row = format!(r#"tr[data-case="{case}"]"#);
    c.wait()
        .at_most(WAIT)
        .for_element(Locator::Css(&row))
        .await
        .expect("the case on the page");
    let form = format!("#resolve-{case}");
    for (name, text) in [
        ("resolution", "fee taken by the channel"),
        ("reason", "checked the bank statement"),
    ] {
        c.find(Locator::Css(&format!("{form} input[name={name}]")))
            .await
            .unwrap()
            .send_keys(text)
            .await
            .unwrap();
    }
    c.find(Locator::Css(&format!("{form} button[type=submit]")))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    wait_until("the case to leave the page", || async {
        c.find(Locator::Css(&row)).await.is_err()
    })
    .await;
    assert!(text_of(c, "#action-error").await.is_empty());
    let (status, by, resolution): (Option<String>, Option<String>, Option<String>) =
        sqlx::query_as(
            "SELECT case_status, resolved_by, resolution FROM recon_items WHERE id = $1",
        )
        .bind(case)
        .fetch_one(site.pool())
        .await
        .unwrap();
    assert_eq!(status.as_deref(), Some("resolved"));
    assert_eq!(by.as_deref(), Some("root-admin"));
    assert_eq!(resolution.as_deref(), Some("fee taken by the channel"));
    let (actor, reason): (String, Option<String>) = sqlx::query_as(
        "SELECT actor, reason FROM audit_log WHERE action = 'resolve_case' ORDER BY id DESC",
    )
    .fetch_one(site.pool())
    .await
    .unwrap();
    assert_eq!(
        (actor.as_str(), reason.as_deref()),
        ("root-admin", Some("checked the bank statement"))
    );
}

/// A statement naming L1's attempt with another amount opens a case; `/recon` lists it with
/// its evidence and the day's counts, and only an admin gets the resolve form.
async fn recon_page_shows_open_cases(site: &Site, ops: &str) {
    let mut conn = site.pool().acquire().await.unwrap();
    let attempt = repayd::store::reports::attempts(&mut conn, Some("L1"), 1)
        .await
        .unwrap()
        .remove(0);
    drop(conn);
    let attempt = serde_json::to_value(&attempt).unwrap();
    let day = common::web::statement_naming(&site.app.engine, &[(&attempt, "1.23")]).await;
    let case = case_of(site, &attempt).await;
    let admin = token(site, "root-admin", Role::Admin).await;
    let page = |who: String, path: String| async move {
        let r = reqwest::Client::new()
            .get(site.url(&path))
            .header("cookie", format!("repayd_token={who}"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "{path}");
        r.text().await.unwrap()
    };
    let html = page(ops.to_string(), format!("/recon?date={day}")).await;
    assert!(
        html.contains(r#"<a href="/recon">Reconciliation</a>"#),
        "nav link"
    );
    assert!(html.contains(&format!("Outcomes of {day}")));
    assert!(html.contains(&format!(r#"data-case="{case}""#)), "{html}");
    assert!(html.contains(attempt["order_no"].as_str().unwrap()));
    assert!(html.contains("amount_differs") && html.contains("1.23"));
    assert!(html.contains(&format!("#attempt-{}", attempt["id"])));
    assert!(!html.contains("6222021234567890"), "no full account number");
    assert!(!html.contains("resolve-"), "collections cannot resolve");
    let html = page(admin.clone(), "/recon".to_string()).await;
    assert!(html.contains(&format!(r#"data-url="/api/v1/recon/cases/{case}/resolve""#)));
    assert!(
        html.contains(&format!("Outcomes of {day}")),
        "the latest day by default"
    );
    let r = reqwest::Client::new()
        .get(site.url("/recon?date=someday"))
        .header("cookie", format!("repayd_token={admin}"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
}

both_backends!(pages_render);
