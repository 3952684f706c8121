//! Test harness: a fresh database per test on either backend, the app on port 0, and one
//! helper per endpoint. PostgreSQL is required: build with TREASURYD_TEST_POSTGRES=skip to
//! mark its tests ignored locally (CI never does; see build.rs).

use reqwest::StatusCode;
use secrecy::SecretString;
use serde_json::{Value, json};
use std::net::SocketAddr;
use std::sync::Arc;
use treasuryd::api::auth::Caller;
use treasuryd::app::App;
use treasuryd::config::Config;
use treasuryd::domain::{AssetKey, Role};
use treasuryd::ledger::Ledger;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

pub fn postgres_admin_url() -> String {
    std::env::var("TREASURYD_TEST_POSTGRES_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into())
}

/// A database that exists for one test and is dropped afterwards (unless TREASURYD_TEST_KEEP_DB
/// is set, to inspect it).
pub struct TestDb {
    pub url: String,
    pg_name: Option<String>,
    _dir: Option<tempfile::TempDir>,
}

impl TestDb {
    /// A SQLite database loaded from `script` (a `.dump`), in a directory of its own.
    pub async fn sqlite_from(script: &str) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("loaded.db").display());
        let pool = sqlx::SqlitePool::connect(&format!("{url}?mode=rwc"))
            .await
            .unwrap();
        sqlx::raw_sql(sqlx::AssertSqlSafe(script.to_owned()))
            .execute(&pool)
            .await
            .unwrap();
        pool.close().await;
        Self {
            url,
            pg_name: None,
            _dir: Some(dir),
        }
    }

    /// A PostgreSQL database of its own loaded from `script` (a `pg_dump` in plain SQL).
    pub async fn postgres_from(script: &str) -> Self {
        let db = Self::new(Backend::Postgres).await;
        let pool = sqlx::PgPool::connect(&db.url).await.unwrap();
        sqlx::raw_sql(sqlx::AssertSqlSafe(script.to_owned()))
            .execute(&pool)
            .await
            .unwrap();
        pool.close().await;
        db
    }

    pub async fn new(backend: Backend) -> Self {
        match backend {
            Backend::Sqlite => {
                let dir = tempfile::tempdir().expect("temp dir");
                let url = format!("sqlite://{}", dir.path().join("test.db").display());
                Self {
                    url,
                    pg_name: None,
                    _dir: Some(dir),
                }
            }
            Backend::Postgres => {
                let admin = postgres_admin_url();
                let name = format!("treasuryd_test_{}", uuid::Uuid::new_v4().simple());
                let pool = sqlx::PgPool::connect(&admin).await.unwrap_or_else(|e| {
                    panic!(
                        "PostgreSQL is required by the test suite and is not reachable at {admin}: {e}. \
                         Start it (pg_ctlcluster --skip-systemctl-redirect $(ls /etc/postgresql) main start) \
                         or set TREASURYD_TEST_POSTGRES=skip to opt out locally."
                    )
                });
                sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE \"{name}\"")))
                    .execute(&pool)
                    .await
                    .expect("create test database");
                pool.close().await;
                let base = admin
                    .rsplit_once('/')
                    .map_or(admin.as_str(), |(b, _)| b)
                    .to_owned();
                Self {
                    url: format!("{base}/{name}"),
                    pg_name: Some(name),
                    _dir: None,
                }
            }
        }
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        let Some(name) = self.pg_name.take() else {
            return;
        };
        if std::env::var("TREASURYD_TEST_KEEP_DB").is_ok() {
            eprintln!("keeping test database {name}");
            return;
        }
        // Drop runs inside the test's runtime; use a thread with its own to stay synchronous.
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .ok()?;
            rt.block_on(async {
                let pool = sqlx::PgPool::connect(&postgres_admin_url()).await.ok()?;
                sqlx::query(sqlx::AssertSqlSafe(format!(
                    "DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)"
                )))
                .execute(&pool)
                .await
                .ok()?;
                pool.close().await;
                Some(())
            })
        })
        .join();
    }
}

pub fn test_config(db: &TestDb, dir: &std::path::Path) -> Config {
    let mut c = Config::defaults();
    c.data_dir = dir.to_owned();
    c.server.listen = "127.0.0.1:0".parse().unwrap();
    c.server.metrics_listen = "127.0.0.1:0".parse().unwrap();
    c.server.shutdown_grace_seconds = 5;
    c.database.url = Some(SecretString::from(db.url.clone()));
    c.database.max_connections = 8;
    c.networks = vec![test_network()];
    c
}

/// The payout network of API tests: ethereum with USDT and USDC, four-eyes from 100,000.
/// Its node is never contacted by these tests (no wallets are configured).
pub fn test_network() -> treasuryd::config::NetworkConfig {
    let text = format!(
        "name = \"ethereum\"\nchain_id = 31337\nrpc_urls = [\"http://127.0.0.1:9\"]\napproval_threshold = \"100000\"\n\
         [[tokens]]\ncode = \"USDT\"\naddress = \"{USDT_CONTRACT}\"\ndecimals = 6\n\
         [[tokens]]\ncode = \"USDC\"\naddress = \"{USDC_CONTRACT}\"\ndecimals = 6\n"
    );
    toml::from_str(&text).expect("test network parses")
}

pub const USDT_CONTRACT: &str = "0xdAC17F958D2ee523a2206206994597C13D831ec7";
pub const USDC_CONTRACT: &str = "0xA0b86991c6218b36c1d19D4a2e9Eb0cE3606eB48";
/// Anvil's second dev account: a valid checksummed destination.
pub const DESTINATION: &str = "0x70997970C51812dc3A010C7d01b50e0d17dc79C8";

pub fn init_logs() {
    if std::env::var("TEST_LOG").is_ok() {
        treasuryd::telemetry::init(&treasuryd::config::LogConfig::default());
    }
}

pub const ADMIN: &str = "tdk_test_admin";
pub const TRADER: &str = "tdk_test_trader";
pub const APPROVER: &str = "tdk_test_approver";
pub const OPERATOR: &str = "tdk_test_operator";
/// The same person as TRADER (same name), holding the Approver role: four-eyes must refuse
/// them their own payouts.
pub const TRADER_AS_APPROVER: &str = "tdk_test_trader_approver";
/// A second trader (`test-trader-2`), for what two callers do with the same key.
pub const OTHER_TRADER: &str = "tdk_test_other_trader";

pub fn usdt() -> AssetKey {
    AssetKey::new("ethereum", "USDT")
}

pub struct TestApp {
    pub api: SocketAddr,
    pub metrics: SocketAddr,
    pub client: reqwest::Client,
    pub ledger: Ledger,
    pub store: treasuryd::store::DynStore,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<anyhow::Result<()>>>,
    _dir: tempfile::TempDir,
    _db: Arc<TestDb>,
}

impl TestApp {
    pub async fn spawn(backend: Backend) -> Self {
        Self::spawn_with(backend, |_, _| {}).await
    }

    /// Spawns with a config adjusted by `adjust` (given the config and a scratch directory).
    pub async fn spawn_with(
        backend: Backend,
        adjust: impl FnOnce(&mut treasuryd::config::Config, &std::path::Path),
    ) -> Self {
        Self::spawn_on(Arc::new(TestDb::new(backend).await), adjust).await
    }

    /// Like `spawn_with`, on an existing database (a restart).
    pub async fn spawn_on(
        db: Arc<TestDb>,
        adjust: impl FnOnce(&mut treasuryd::config::Config, &std::path::Path),
    ) -> Self {
        Self::spawn_clocked(db, Arc::new(treasuryd::clock::SystemClock), adjust).await
    }

    /// Like `spawn_on`, with deals and timers on `clock`.
    pub async fn spawn_clocked(
        db: Arc<TestDb>,
        clock: treasuryd::clock::DynClock,
        adjust: impl FnOnce(&mut treasuryd::config::Config, &std::path::Path),
    ) -> Self {
        init_logs();
        let dir = tempfile::tempdir().unwrap();
        let mut config = test_config(&db, dir.path());
        adjust(&mut config, dir.path());
        let tokens = [
            (ADMIN, "test-admin", Role::Admin),
            (TRADER, "test-trader", Role::Trader),
            (APPROVER, "test-approver", Role::Approver),
            (OPERATOR, "test-operator", Role::Operator),
            (TRADER_AS_APPROVER, "test-trader", Role::Approver),
            (OTHER_TRADER, "test-trader-2", Role::Trader),
        ]
        .into_iter()
        .map(|(t, name, role)| {
            (
                SecretString::from(t.to_owned()),
                Caller::staff(name.to_owned(), role),
            )
        })
        .collect();
        let app = App::build_with_clock(config, tokens, clock)
            .await
            .expect("app builds");
        let (api, metrics, ledger, store) = (
            app.api_addr(),
            app.metrics_addr(),
            app.state().ledger.clone(),
            app.state().store.clone(),
        );
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(app.run_until_stopped(async {
            let _ = rx.await;
        }));
        Self {
            api,
            metrics,
            client: reqwest::Client::new(),
            ledger,
            store,
            shutdown: Some(tx),
            task: Some(task),
            _dir: dir,
            _db: db,
        }
    }

    /// Its database, to start another app on after this one stops.
    pub fn db(&self) -> Arc<TestDb> {
        self._db.clone()
    }

    /// Stops the app the way SIGTERM would and returns what `run_until_stopped` returned.
    pub async fn stop(mut self) -> anyhow::Result<()> {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        self.task.take().expect("running").await.expect("app task")
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.api, path)
    }

    /// A GET whose answer is not JSON (files, Markdown, CSV): its body as text.
    pub async fn get_text(&self, path: &str, token: &str) -> String {
        self.client
            .get(self.url(path))
            .bearer_auth(token)
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    }

    pub async fn get(&self, path: &str, token: &str) -> (StatusCode, Value) {
        let r = self
            .client
            .get(self.url(path))
            .bearer_auth(token)
            .send()
            .await
            .expect("request");
        let status = r.status();
        (status, r.json().await.unwrap_or(Value::Null))
    }

    pub async fn post(
        &self,
        path: &str,
        token: &str,
        key: Option<&str>,
        body: &Value,
    ) -> (StatusCode, Value) {
        let mut req = self
            .client
            .post(self.url(path))
            .bearer_auth(token)
            .json(body);
        if let Some(k) = key {
            req = req.header("Idempotency-Key", k);
        }
        let r = req.send().await.expect("request");
        let status = r.status();
        (status, r.json().await.unwrap_or(Value::Null))
    }

    /// Any method, with an optional JSON body.
    pub async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        token: &str,
        body: Option<&Value>,
    ) -> (StatusCode, Value) {
        let mut req = self
            .client
            .request(method, self.url(path))
            .bearer_auth(token);
        if let Some(b) = body {
            req = req.json(b);
        }
        let r = req.send().await.expect("request");
        let status = r.status();
        (status, r.json().await.unwrap_or(Value::Null))
    }

    pub async fn create_account(&self, owner: &str) -> String {
        self.open_account(owner, None).await
    }

    /// A USDT partner account of `company`.
    pub async fn create_account_for(&self, owner: &str, company: &str) -> String {
        self.open_account(owner, Some(company)).await
    }

    async fn open_account(&self, owner: &str, company: Option<&str>) -> String {
        let (status, body) = self
            .post(
                "/v1/accounts",
                ADMIN,
                None,
                &json!({"owner": owner, "network": "ethereum", "asset": "USDT", "kind": "partner",
                    "company": company, "reason": "test setup"}),
            )
            .await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
        body["id"].as_str().unwrap().to_owned()
    }

    pub async fn deposit(&self, account: &str, amount: &str, key: &str) -> Value {
        let (status, body) = self
            .post(
                "/v1/deposits",
                ADMIN,
                Some(key),
                &json!({"account": account, "amount": amount, "reason": "test funding"}),
            )
            .await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
        body
    }

    pub async fn hold(&self, account: &str, amount: &str, key: &str) -> String {
        let (status, body) = self
            .post(
                "/v1/holds",
                ADMIN,
                Some(key),
                &json!({"account": account, "amount": amount, "reason": "test hold"}),
            )
            .await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
        body["hold"]["id"].as_str().unwrap().to_owned()
    }

    pub async fn account(&self, id: &str) -> Value {
        let (status, body) = self.get(&format!("/v1/accounts/{id}"), TRADER).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        body
    }

    /// (journal length, audit rows): what "changed nothing" is measured against.
    pub async fn footprint(&self) -> (i64, usize) {
        let store = &self.store;
        let (seq, _) = store.journal_head().await.unwrap();
        let audit = store.list_audit(None, 100_000).await.unwrap().len();
        (seq, audit)
    }

    pub async fn metrics_text(&self) -> String {
        self.client
            .get(format!("http://{}/metrics", self.metrics))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    }

    pub async fn verify_clean(&self) {
        let report = treasuryd::ledger::verify::verify(self.store.as_ref())
            .await
            .unwrap();
        assert!(report.is_clean(), "{report}");
    }
}

/// Reads one sample's value from Prometheus text, e.g. `metric{a="b"}`.
pub fn metric_value(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find(|l| l.starts_with(series) && l[series.len()..].starts_with(' '))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

/// Generates `name::sqlite` and `name::postgres` tests from `async fn name(Backend)`.
#[macro_export]
macro_rules! on_both_backends {
    ($($name:ident),* $(,)?) => { $(
        mod $name {
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn sqlite() {
                super::$name($crate::harness::Backend::Sqlite).await
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            #[cfg_attr(treasuryd_skip_postgres, ignore = "built with TREASURYD_TEST_POSTGRES=skip")]
            async fn postgres() {
                super::$name($crate::harness::Backend::Postgres).await
            }
        }
    )* };
}

/// Opens a USDT partner account straight through the store, for tests below the API.
pub async fn open_partner(
    store: &dyn treasuryd::store::LedgerStore,
    owner: &str,
) -> treasuryd::ledger::Account {
    let audit = treasuryd::store::AuditRecord {
        actor: "test".into(),
        role: Role::Admin,
        action: "account.create".into(),
        target: String::new(),
        reason: Some("test setup".into()),
        request_id: String::new(),
        at: 0,
        evidence: None,
    };
    let new = treasuryd::ledger::NewAccount {
        owner: owner.to_owned(),
        company: None,
        asset: usdt(),
        kind: treasuryd::ledger::AccountKind::Partner,
        allow_negative: false,
    };
    store
        .create_account(&new, &audit)
        .await
        .expect("account opens")
}

/// Opens an `ethereum` partner account in `asset` through the API and deposits `amount` into it.
pub async fn funded_partner(app: &TestApp, owner: &str, asset: &str, amount: &str) -> String {
    let (s, body) = app
        .post(
            "/v1/accounts",
            ADMIN,
            None,
            &json!({"owner": owner, "network": "ethereum", "asset": asset, "kind": "partner", "reason": "test"}),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{body}");
    let id = body["id"].as_str().unwrap().to_owned();
    let (s, body) = app
        .post(
            "/v1/deposits",
            ADMIN,
            Some(&format!("fund-{owner}-{asset}")),
            &json!({"account": id, "amount": amount, "reason": "test"}),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{body}");
    id
}

/// Waits until `series` on the metrics listener reads `value` (gauges refresh on their own
/// schedule).
pub async fn wait_metric(app: &TestApp, series: &str, value: f64) {
    for _ in 0..200 {
        if metric_value(&app.metrics_text().await, series) == Some(value) {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let now = metric_value(&app.metrics_text().await, series);
    panic!("{series} is {now:?}, not {value}");
}

/// The kinds of a payout's events, in order.
pub fn event_kinds(payout: &Value) -> Vec<String> {
    payout["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["kind"].as_str().unwrap().to_owned())
        .collect()
}

/// Makes sure `promtool` and `prometheus` (Debian's `prometheus` package) are on the PATH,
/// installing the package on first use as the tests install anvil from `tools/` (this kind of
/// machine reaches Debian's registry). Fails, never skips, when that is not possible.
pub fn ensure_prometheus() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    let present = || {
        ["promtool", "prometheus"].iter().all(|b| {
            std::process::Command::new(b)
                .arg("--version")
                .output()
                .is_ok_and(|o| o.status.success())
        })
    };
    ONCE.call_once(|| {
        if present() {
            return;
        }
        eprintln!("promtool/prometheus missing: installing Debian's prometheus package");
        let _ = std::process::Command::new("apt-get")
            .args(["install", "-y", "--no-install-recommends", "prometheus"])
            .env("DEBIAN_FRONTEND", "noninteractive")
            .status();
    });
    assert!(
        present(),
        "promtool and prometheus are needed: apt-get install prometheus (Debian's package)"
    );
}

/// The schemathesis binary from `tools/.venv`, installed there from the pinned
/// `tools/schemathesis/requirements.txt` on first use.
pub fn ensure_schemathesis() -> std::path::PathBuf {
    static ONCE: std::sync::Once = std::sync::Once::new();
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let venv = root.join("tools/.venv");
    let bin = venv.join("bin/schemathesis");
    let present = || {
        std::process::Command::new(&bin)
            .arg("--version")
            .output()
            .is_ok_and(|o| o.status.success())
    };
    ONCE.call_once(|| {
        if present() {
            return;
        }
        eprintln!(
            "schemathesis missing: installing the pinned tools/schemathesis/requirements.txt"
        );
        let _ = std::process::Command::new("python3")
            .args(["-m", "venv"])
            .arg(&venv)
            .status();
        let _ = std::process::Command::new(venv.join("bin/pip"))
            .args(["install", "--quiet", "-r"])
            .arg(root.join("tools/schemathesis/requirements.txt"))
            .status();
    });
    assert!(
        present(),
        "schemathesis is needed: python3 -m venv tools/.venv && tools/.venv/bin/pip install -r tools/schemathesis/requirements.txt"
    );
    bin
}

/// Makes sure Debian's Chromium is at /usr/bin/chromium and playwright-core is in
/// `tools/node_modules` (installing them on first use), for the console's browser test.
pub fn ensure_browser() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    let tools = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tools");
    ONCE.call_once(|| {
        if !std::path::Path::new("/usr/bin/chromium").exists() {
            eprintln!("chromium missing: installing Debian's chromium package");
            let _ = std::process::Command::new("apt-get")
                .args(["install", "-y", "--no-install-recommends", "chromium"])
                .env("DEBIAN_FRONTEND", "noninteractive")
                .status();
        }
        if !tools
            .join("node_modules/playwright-core/package.json")
            .exists()
        {
            let _ = std::process::Command::new("npm")
                .args(["ci", "--no-audit", "--no-fund"])
                .current_dir(&tools)
                .status();
        }
    });
    assert!(
        std::path::Path::new("/usr/bin/chromium").exists(),
        "Chromium is needed: apt-get install chromium (Debian's package)"
    );
    assert!(
        tools
            .join("node_modules/playwright-core/package.json")
            .exists(),
        "playwright-core is needed: npm ci --prefix tools"
    );
}
