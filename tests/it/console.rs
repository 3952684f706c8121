//! The admin console over plain HTTP: sign-in with a token and (Admins, Approvers) a TOTP code
//! enrolled on first sign-in, one use per code and per recovery code; the session cookie's
//! flags; every page and form refuses a missing session, a wrong role and a missing CSRF token,
//! changing nothing; no page shows a secret; the disputes page lists by remaining TTL and every
//! deal in INSPECTION or ISSUE shows its timer. `console_browser` drives it in Chromium.

use crate::harness::*;
use reqwest::StatusCode;
use reqwest::header::{COOKIE, LOCATION, SET_COOKIE};
use serde_json::json;
use std::time::Duration;
use treasuryd::console::totp;

pub(crate) const CONSOLE_KEY: &str = "a test console key, 32+ characters, public";

/// A browser-like client: no redirects followed, cookies kept by hand.
pub(crate) struct Session {
    http: reqwest::Client,
    base: String,
    cookies: Vec<(String, String)>,
    pub set_cookie: Vec<String>,
}

impl Session {
    pub fn new(app: &TestApp) -> Self {
        Self::at(app.url(""))
    }

    /// A browser for the daemon listening at `base` (e.g. `http://127.0.0.1:8080`).
    pub fn at(base: String) -> Self {
        Self {
            http: reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .build()
                .unwrap(),
            base,
            cookies: Vec::new(),
            set_cookie: Vec::new(),
        }
    }

    fn keep(&mut self, r: &reqwest::Response) {
        for v in r.headers().get_all(SET_COOKIE) {
            let text = v.to_str().unwrap().to_owned();
            let (pair, _) = text.split_once(';').unwrap_or((&text, ""));
            let (k, val) = pair.split_once('=').unwrap();
            self.cookies.retain(|(n, _)| n != k);
            if !val.is_empty() {
                self.cookies.push((k.to_owned(), val.to_owned()));
            }
            self.set_cookie.push(text);
        }
    }

    fn cookie_header(&self) -> String {
        self.cookies
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join("; ")
    }

    pub async fn get(&mut self, path: &str) -> (StatusCode, String, Option<String>) {
        let r = self
            .http
            .get(format!("{}{path}", self.base))
            .header(COOKIE, self.cookie_header())
            .send()
            .await
            .unwrap();
        self.keep(&r);
        let location = r
            .headers()
            .get(LOCATION)
            .map(|l| l.to_str().unwrap().to_owned());
        (r.status(), r.text().await.unwrap(), location)
    }

    pub async fn post(
        &mut self,
        path: &str,
        form: &[(&str, &str)],
    ) -> (StatusCode, String, Option<String>) {
        let r = self
            .http
            .post(format!("{}{path}", self.base))
            .header(COOKIE, self.cookie_header())
            .header(
                reqwest::header::CONTENT_TYPE,
                "application/x-www-form-urlencoded",
            )
            .body(
                form_urlencoded::Serializer::new(String::new())
                    .extend_pairs(form)
                    .finish(),
            )
            .send()
            .await
            .unwrap();
        self.keep(&r);
        let location = r
            .headers()
            .get(LOCATION)
            .map(|l| l.to_str().unwrap().to_owned());
        (r.status(), r.text().await.unwrap(), location)
    }

    /// The value of the hidden input `name` in `html`.
    pub fn hidden(html: &str, name: &str) -> String {
        let at = html
            .find(&format!("name=\"{name}\" value=\""))
            .unwrap_or_else(|| panic!("no {name} in {html}"));
        let rest = &html[at + name.len() + 15..];
        rest[..rest.find('"').unwrap()].to_owned()
    }

    /// Signs in with `token`; for Admins and Approvers enrols (first time) or passes the second
    /// factor with the current code. Returns the session's CSRF token.
    pub async fn sign_in(&mut self, token: &str) -> String {
        let (_, form, _) = self.get("/admin/login").await;
        let nonce = Self::hidden(&form, "login_csrf");
        let (s, _, next) = self
            .post("/admin/login", &[("login_csrf", &nonce), ("token", token)])
            .await;
        assert_eq!(s, StatusCode::SEE_OTHER);
        let next = next.unwrap();
        if next == "/admin/2fa/enrol" {
            let (_, page, _) = self.get("/admin/2fa/enrol").await;
            let csrf = Self::hidden(&page, "csrf");
            let code = code_now(&secret_of(&page), 0);
            let (s, page, _) = self
                .post("/admin/2fa/enrol", &[("csrf", &csrf), ("code", &code)])
                .await;
            assert_eq!(s, StatusCode::OK, "{page}");
            assert!(page.contains("recovery-codes"), "{page}");
        } else if next == "/admin/2fa" {
            panic!("already enrolled: use second_factor");
        }
        let (_, home, _) = self.get("/admin").await;
        Self::hidden(&home, "csrf")
    }
}

/// The TOTP secret an enrolment page shows.
pub(crate) fn secret_of(page: &str) -> Vec<u8> {
    let at = page
        .find("id=\"totp-secret\">")
        .expect("the secret is shown")
        + 17;
    let text = &page[at..at + page[at..].find('<').unwrap()];
    totp::base32_decode(text).unwrap()
}

/// The code for now plus `offset` steps.
pub(crate) fn code_now(secret: &[u8], offset: i64) -> String {
    let step = totp::step(chrono::Utc::now().timestamp()) + offset;
    format!("{:06}", totp::hotp(secret, step as u64))
}

pub(crate) fn with_console(c: &mut treasuryd::config::Config) {
    c.secrets.insert(
        "TREASURYD_CONSOLE_SECRET".into(),
        CONSOLE_KEY.to_owned().into(),
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sign_in_needs_a_token_and_for_admins_a_code_each_used_once() {
    let app = TestApp::spawn_with(Backend::Sqlite, |c, _| with_console(c)).await;
    let mut s = Session::new(&app);
    let (_, form, _) = s.get("/admin/login").await;
    let nonce = Session::hidden(&form, "login_csrf");
    // The login form has its own CSRF pair.
    let (status, _, _) = s
        .post(
            "/admin/login",
            &[("login_csrf", "forged"), ("token", ADMIN)],
        )
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (status, page, _) = s
        .post(
            "/admin/login",
            &[("login_csrf", &nonce), ("token", "tdk_nope")],
        )
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{page}");
    let (status, page, _) = s
        .post("/admin/login", &[("login_csrf", &nonce), ("token", TRADER)])
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert!(page.contains("traders use the API"), "{page}");

    // Admin: token, then enrolment; until then every page sends to the second factor.
    let (status, _, next) = s
        .post("/admin/login", &[("login_csrf", &nonce), ("token", ADMIN)])
        .await;
    assert_eq!(
        (status, next.as_deref()),
        (StatusCode::SEE_OTHER, Some("/admin/2fa/enrol"))
    );
    let cookie = s
        .set_cookie
        .iter()
        .find(|c| c.starts_with("__Host-treasuryd_session="))
        .unwrap()
        .clone();
    for flag in [
        "HttpOnly",
        "Secure",
        "SameSite=Strict",
        "Path=/;",
        "Max-Age=3600",
    ] {
        assert!(cookie.contains(flag), "{flag} missing: {cookie}");
    }
    let (status, _, next) = s.get("/admin/treasury").await;
    assert_eq!(
        (status, next.as_deref()),
        (StatusCode::SEE_OTHER, Some("/admin/2fa"))
    );
    let (_, page, _) = s.get("/admin/2fa/enrol").await;
    let secret = secret_of(&page);
    let csrf = Session::hidden(&page, "csrf");
    let (status, _, _) = s
        .post("/admin/2fa/enrol", &[("csrf", &csrf), ("code", "000000")])
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    let code = code_now(&secret, 0);
    let (status, page, _) = s
        .post("/admin/2fa/enrol", &[("csrf", &csrf), ("code", &code)])
        .await;
    assert_eq!(status, StatusCode::OK, "{page}");
    let recovery: Vec<String> = page
        .split("<li><code>")
        .skip(1)
        .map(|x| x[..x.find('<').unwrap()].to_owned())
        .collect();
    assert_eq!(recovery.len(), 8, "{page}");
    let (status, page, _) = s.get("/admin/treasury").await;
    assert_eq!(status, StatusCode::OK, "{page}");

    // A second sign-in: the code just used is refused (one use per time step), the next one
    // works; a recovery code works once.
    let mut again = Session::new(&app);
    let (_, form, _) = again.get("/admin/login").await;
    let nonce = Session::hidden(&form, "login_csrf");
    let (_, _, next) = again
        .post("/admin/login", &[("login_csrf", &nonce), ("token", ADMIN)])
        .await;
    assert_eq!(next.as_deref(), Some("/admin/2fa"));
    let (_, page, _) = again.get("/admin/2fa").await;
    let csrf = Session::hidden(&page, "csrf");
    let (status, _, _) = again
        .post("/admin/2fa", &[("csrf", &csrf), ("code", &code)])
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "a code works once");
    let (status, _, next) = again
        .post("/admin/2fa", &[("csrf", &csrf), ("code", &recovery[0])])
        .await;
    assert_eq!(
        (status, next.as_deref()),
        (StatusCode::SEE_OTHER, Some("/admin"))
    );
    let mut third = Session::new(&app);
    let (_, form, _) = third.get("/admin/login").await;
    let nonce = Session::hidden(&form, "login_csrf");
    third
        .post("/admin/login", &[("login_csrf", &nonce), ("token", ADMIN)])
        .await;
    let (_, page, _) = third.get("/admin/2fa").await;
    let csrf = Session::hidden(&page, "csrf");
    let (status, _, _) = third
        .post("/admin/2fa", &[("csrf", &csrf), ("code", &recovery[0])])
        .await;
    assert_eq!(
        status,
        StatusCode::UNAUTHORIZED,
        "a recovery code works once"
    );
    let next_code = code_now(&secret, 1);
    let (status, _, _) = third
        .post("/admin/2fa", &[("csrf", &csrf), ("code", &next_code)])
        .await;
    assert_eq!(
        status,
        StatusCode::SEE_OTHER,
        "the next step's code (clock drift) works"
    );

    // Signing out ends the session.
    let (_, home, _) = s.get("/admin").await;
    let csrf = Session::hidden(&home, "csrf");
    let (status, _, _) = s.post("/admin/logout", &[("csrf", &csrf)]).await;
    assert_eq!(status, StatusCode::SEE_OTHER);
    let (status, _, next) = s.get("/admin/treasury").await;
    assert_eq!(
        (status, next.as_deref()),
        (StatusCode::SEE_OTHER, Some("/admin/login"))
    );
    app.stop().await.unwrap();
}

const PAGES: [(&str, &[&str]); 9] = [
    ("/admin", &["admin", "operator", "approver"]),
    ("/admin/disputes", &["admin", "operator"]),
    ("/admin/deals", &["admin", "operator", "approver"]),
    ("/admin/payouts", &["admin", "operator", "approver"]),
    ("/admin/treasury", &["admin", "operator", "approver"]),
    ("/admin/webhooks", &["admin"]),
    ("/admin/trust", &["admin", "operator", "approver"]),
    ("/admin/pilot", &["admin", "operator"]),
    (
        "/admin/deals?state=ISSUE",
        &["admin", "operator", "approver"],
    ),
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_page_and_form_refuses_no_session_a_wrong_role_and_no_csrf() {
    let app = TestApp::spawn_with(Backend::Sqlite, |c, _| {
        with_console(c);
        c.webhooks.allow_private_networks = true;
    })
    .await;
    // Something secret exists: a webhook endpoint's signing secret.
    let (s, endpoint) = app
        .post(
            "/v1/webhooks/endpoints",
            ADMIN,
            None,
            &json!({"url": "https://partner.example/hooks", "event_types": ["*"], "reason": "t"}),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{endpoint}");
    let webhook_secret = endpoint["secret"].as_str().unwrap().to_owned();
    let endpoint_id = endpoint["id"].as_str().unwrap().to_owned();

    // No session: every page and every form sends to sign-in and changes nothing.
    let mut nobody = Session::new(&app);
    for (path, _) in PAGES {
        let (status, _, next) = nobody.get(path).await;
        assert_eq!(
            (status, next.as_deref()),
            (StatusCode::SEE_OTHER, Some("/admin/login")),
            "{path}"
        );
    }
    let forms = [
        "/admin/networks/ethereum/safe-mode",
        "/admin/networks/ethereum/freezes",
        "/admin/networks/ethereum/rollout",
        "/admin/canary/ethereum",
        "/admin/payouts/01a2-x/approve",
        "/admin/deals/01a2-x/resolve",
        &format!("/admin/webhooks/{endpoint_id}/replay"),
        "/admin/trust/sessions/01a2-x/close",
    ];
    for path in forms {
        let (status, _, next) = nobody
            .post(
                path,
                &[
                    ("enabled", "true"),
                    ("reason", "x"),
                    ("asset", "USDT"),
                    ("frozen", "true"),
                    ("phase", "pilot"),
                ],
            )
            .await;
        assert_eq!(
            (status, next.as_deref()),
            (StatusCode::SEE_OTHER, Some("/admin/login")),
            "{path}"
        );
    }

    let mut sessions = Vec::new();
    for (token, role) in [
        (ADMIN, "admin"),
        (OPERATOR, "operator"),
        (APPROVER, "approver"),
    ] {
        let mut s = Session::new(&app);
        let csrf = s.sign_in(token).await;
        sessions.push((role, s, csrf));
    }
    for (role, s, csrf) in sessions.iter_mut() {
        for (path, allowed) in PAGES {
            let (status, page, _) = s.get(path).await;
            let expected = if allowed.contains(role) {
                StatusCode::OK
            } else {
                StatusCode::FORBIDDEN
            };
            assert_eq!(status, expected, "{role} {path}: {page}");
            // No page shows a secret: tokens, the console key, the webhook secret.
            for secret in [
                ADMIN,
                OPERATOR,
                APPROVER,
                TRADER,
                CONSOLE_KEY,
                webhook_secret.as_str(),
            ] {
                assert!(!page.contains(secret), "{role} {path} shows a secret");
            }
        }
        // A form without the CSRF token is refused and changes nothing.
        let (status, _, _) = s
            .post(
                "/admin/networks/ethereum/safe-mode",
                &[("enabled", "true"), ("reason", "no csrf")],
            )
            .await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{role}");
        let (status, _, _) = s
            .post(
                "/admin/networks/ethereum/safe-mode",
                &[
                    ("csrf", "wrong"),
                    ("enabled", "true"),
                    ("reason", "bad csrf"),
                ],
            )
            .await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{role}");
        let _ = csrf;
    }
    let (_, nets) = app.get("/v1/networks", ADMIN).await;
    assert!(
        nets[0].get("safe_mode").is_none(),
        "nothing changed: {nets}"
    );

    // With the token: an Operator or Approver is refused by the API's own role check (the
    // message is shown), an Admin's change is made and audited as through the API.
    for (role, s, csrf) in sessions.iter_mut() {
        let (status, _, next) = s
            .post(
                "/admin/networks/ethereum/safe-mode",
                &[
                    ("csrf", csrf.as_str()),
                    ("enabled", "true"),
                    ("reason", "console drill"),
                ],
            )
            .await;
        assert_eq!(status, StatusCode::SEE_OTHER, "{role}");
        let next = next.unwrap();
        if *role == "admin" {
            assert!(next.contains("notice="), "{next}");
        } else {
            assert!(next.contains("error="), "{role}: {next}");
        }
    }
    let (_, nets) = app.get("/v1/networks", ADMIN).await;
    assert_eq!(nets[0]["safe_mode"]["actor"], "test-admin", "{nets}");
    // A form that cannot become a request goes back with the reason and changes nothing.
    let (_, admin, csrf) = &mut sessions[0];
    let (status, _, next) = admin
        .post(
            "/admin/networks/ethereum/rollout",
            &[("csrf", csrf.as_str()), ("reason", "no phase chosen")],
        )
        .await;
    assert_eq!(status, StatusCode::SEE_OTHER);
    let next = next.unwrap();
    assert!(
        next.starts_with("/admin/treasury?error=the+form+is+incomplete"),
        "{next}"
    );
    let (_, after) = app.get("/v1/networks", ADMIN).await;
    assert_eq!(after[0]["rollout"], nets[0]["rollout"], "{after}");
    let (_, audit) = app.get("/v1/audit?limit=50", ADMIN).await;
    let entry = audit["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["action"] == "safe_mode.enter")
        .unwrap();
    assert_eq!(
        (&entry["actor"], &entry["reason"]),
        (&json!("test-admin"), &json!("console drill"))
    );
    assert!(
        entry["request_id"]
            .as_str()
            .unwrap()
            .starts_with("console-"),
        "{entry}"
    );
    // Hardened answers.
    let r = reqwest::get(app.url("/admin/login")).await.unwrap();
    let h = r.headers();
    assert_eq!(h["x-frame-options"], "DENY");
    assert!(
        h["content-security-policy"]
            .to_str()
            .unwrap()
            .contains("script-src 'self'")
    );
    assert_eq!(h["cache-control"], "no-store");
    app.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_disputes_page_lists_by_remaining_ttl_and_every_open_deal_shows_its_timer() {
    let app = TestApp::spawn_with(Backend::Sqlite, |c, _| {
        with_console(c);
        c.pilot = Some(treasuryd::scope::PilotScope {
            enabled: true,
            country_allowlist: vec!["MN".into()],
            category_allowlist: vec!["USED_CAR_PRIVATE".into(), "REAL_ESTATE_SALE".into()],
            template_version: "v1".into(),
        });
    })
    .await;
    let buyer = funded_partner(&app, "buyer", "USDT", "100000").await;
    let seller = app.create_account("seller").await;
    // Real estate (72 h dispute TTL) disputed first, then a used car (48 h): the car is the
    // more urgent. A third deal stays in INSPECTION.
    let mut ids = Vec::new();
    for (category, reason) in [
        ("REAL_ESTATE_SALE", Some("DOCUMENT_MISMATCH")),
        ("USED_CAR_PRIVATE", Some("MILEAGE_MISMATCH")),
        ("USED_CAR_PRIVATE", None),
    ] {
        let id = crate::deals::new_deal(&app, &buyer, &seller, "1000", category).await["id"]
            .as_str()
            .unwrap()
            .to_owned();
        crate::deals::act(&app, &id, "fund", TRADER, json!({})).await;
        let kind = if category == "REAL_ESTATE_SALE" {
            "PROPERTY_PHOTO"
        } else {
            "PHOTO"
        };
        let evidence = crate::deals::upload(&app, &id, kind).await;
        let (s, d) = crate::deals::act(
            &app,
            &id,
            "deliver",
            TRADER,
            json!({"evidence": [evidence]}),
        )
        .await;
        assert_eq!(s, StatusCode::OK, "{d}");
        if let Some(code) = reason {
            let (s, d) = crate::deals::act(
                &app,
                &id,
                "issue",
                TRADER,
                json!({"reason_code": code, "detail": "x", "evidence": [evidence]}),
            )
            .await;
            assert_eq!(s, StatusCode::OK, "{d}");
        }
        ids.push(id);
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let mut operator = Session::new(&app);
    operator.sign_in(OPERATOR).await;
    let (_, page, _) = operator.get("/admin/disputes").await;
    let car = page.find(&ids[1]).unwrap();
    let house = page.find(&ids[0]).unwrap();
    assert!(car < house, "the nearer TTL first");
    assert!(!page.contains(&ids[2]), "only disputes");
    assert_eq!(
        page.matches("class=\"countdown\"").count(),
        2,
        "every dispute shows its timer"
    );
    // Every deal in INSPECTION or ISSUE shows its pending timer with its deadline.
    for (id, timer) in [
        (&ids[0], "DISPUTE_TTL"),
        (&ids[1], "DISPUTE_TTL"),
        (&ids[2], "AUTO_APPROVE"),
    ] {
        let (_, page, _) = operator.get(&format!("/admin/deals/{id}")).await;
        let timers = &page[page.find("id=\"timers\"").unwrap()..];
        let timers = &timers[..timers.find("</table>").unwrap()];
        assert!(
            timers.contains(timer) && timers.contains("data-deadline="),
            "{id}: {timers}"
        );
        // The resolution form offers exactly the template's outcomes, and the cap is shown.
        if timer == "DISPUTE_TTL" {
            let form = &page[page.find("id=\"resolve\"").unwrap()..];
            let options: Vec<&str> = form
                .split("<option value=\"")
                .skip(1)
                .map(|o| &o[..o.find('"').unwrap()])
                .collect();
            assert_eq!(options, ["RELEASE_FULL", "REFUND_FULL", "OFFSET"], "{form}");
            assert!(page.contains("id=\"offset-cap\""), "{page}");
        }
    }
    // Amounts are exact and grouped by the template's locale (mn-MN: narrow spaces, comma).
    let (_, page, _) = operator.get(&format!("/admin/deals/{}", ids[1])).await;
    assert!(page.contains("1\u{202f}000,000000 USDT"), "{page}");
    // A form without an outcome goes back to the deal with the API's message and changes nothing.
    let csrf = Session::hidden(&page, "csrf");
    let (s, _, to) = operator
        .post(
            &format!("/admin/deals/{}/resolve", ids[1]),
            &[("csrf", &csrf), ("reason", "buyer and seller agreed")],
        )
        .await;
    assert_eq!(s, StatusCode::SEE_OTHER);
    let to = to.unwrap();
    assert!(
        to.starts_with(&format!(
            "/admin/deals/{}?error=outcome+is+required",
            ids[1]
        )),
        "{to}"
    );
    let (_, deal) = app.get(&format!("/v1/deals/{}", ids[1]), OPERATOR).await;
    assert_eq!(deal["state"], "ISSUE", "{deal}");
    app.stop().await.unwrap();
}

/// A webhook receiver on loopback that fails until told otherwise, recording the ids of the
/// events it accepted since.
struct Receiver {
    url: String,
    ok: std::sync::Arc<std::sync::atomic::AtomicBool>,
    delivered: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
    _task: tokio::task::JoinHandle<()>,
}

async fn receiver() -> Receiver {
    use std::sync::atomic::{AtomicBool, Ordering};
    let ok = std::sync::Arc::new(AtomicBool::new(false));
    let delivered: std::sync::Arc<std::sync::Mutex<Vec<String>>> = Default::default();
    let (o, d) = (ok.clone(), delivered.clone());
    let app = axum::Router::new().route(
        "/hooks",
        axum::routing::post(move |body: axum::Json<serde_json::Value>| {
            let (o, d) = (o.clone(), d.clone());
            async move {
                if o.load(Ordering::SeqCst) {
                    d.lock()
                        .unwrap()
                        .push(body["id"].as_str().unwrap_or_default().to_owned());
                    StatusCode::OK
                } else {
                    StatusCode::INTERNAL_SERVER_ERROR
                }
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hooks", listener.local_addr().unwrap());
    let task = tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    Receiver {
        url,
        ok,
        delivered,
        _task: task,
    }
}

/// The console in Chromium (tests/browser/console.mjs) against a daemon on anvil: sign in
/// with TOTP, resolve a dispute through the form (an over-cap offset refused with a visible
/// message), approve a payout as a second person, flip safe-mode and see payouts stop, replay a
/// dead-lettered webhook, run an EOD dry run; then the database says each happened (or, for the
/// dry run, that nothing did). Screenshots go to target/console-screenshots/.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_console_works_in_a_real_browser() {
    use std::sync::atomic::Ordering;
    use treasuryd::dev::chain::{DevChain, TestToken};
    ensure_browser();
    let chain = DevChain::start(&[]).await.unwrap();
    let miner = crate::engine::spawn_miner(&chain, Duration::from_millis(100));
    let hot = chain.dev_key(1).unwrap();
    chain
        .mint(TestToken::Usdt, hot.address(), 10_000_000_000_000)
        .await
        .unwrap();
    let network = format!(
        "name = \"ethereum\"\nchain_id = {}\nrpc_urls = [\"{}\"]\nconfirmations = 2\npoll_interval_ms = 50\napproval_threshold = \"100000\"\n\
         [[tokens]]\ncode = \"USDT\"\naddress = \"{}\"\ndecimals = 6\n",
        chain.chain_id,
        chain.url,
        chain.usdt.to_checksum(None)
    );
    let wallet = format!(
        "[[wallets]]\nnetwork = \"ethereum\"\nrole = \"hot\"\naddress = \"{}\"\nkey_env = \"TREASURYD_TEST_CONSOLE_HOT\"\n",
        hot.address().to_checksum(None)
    );
    let key = format!("0x{}", hex::encode(hot.to_bytes()));
    let app = TestApp::spawn_with(Backend::Sqlite, move |c, dir| {
        with_console(c);
        c.networks = vec![toml::from_str(&network).unwrap()];
        let wallets = dir.join("wallets");
        std::fs::create_dir_all(&wallets).unwrap();
        std::fs::write(wallets.join("ethereum.toml"), wallet).unwrap();
        c.wallets_dir = wallets;
        c.secrets
            .insert("TREASURYD_TEST_CONSOLE_HOT".into(), key.into());
        c.webhooks.allow_private_networks = true;
        c.webhooks.retry_horizon_seconds = 1;
        c.webhooks.retry_min_delay_ms = 50;
        c.webhooks.poll_ms = 20;
        c.escrow.timer_poll_ms = 50;
        c.pilot = Some(treasuryd::scope::PilotScope {
            enabled: true,
            country_allowlist: vec!["MN".into()],
            category_allowlist: vec!["USED_CAR_PRIVATE".into()],
            template_version: "v1".into(),
        });
    })
    .await;

    // A dispute, a payout waiting for four eyes, a dead-lettered webhook, an open EOD session.
    let buyer = funded_partner(&app, "buyer", "USDT", "10000").await;
    let seller = app.create_account("seller").await;
    let deal =
        crate::deals::new_deal(&app, &buyer, &seller, "1000", "USED_CAR_PRIVATE").await["id"]
            .as_str()
            .unwrap()
            .to_owned();
    crate::deals::act(&app, &deal, "fund", TRADER, json!({})).await;
    let photo = crate::deals::upload(&app, &deal, "PHOTO").await;
    crate::deals::act(&app, &deal, "deliver", TRADER, json!({"evidence": [photo]})).await;
    let (s, d) = crate::deals::act(
        &app,
        &deal,
        "issue",
        TRADER,
        json!({"reason_code": "MILEAGE_MISMATCH", "detail": "odometer", "evidence": [photo]}),
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{d}");
    let cap = d["issue"]["offset_cap"]
        .as_str()
        .unwrap()
        .trim_end_matches('0')
        .trim_end_matches('.')
        .to_owned();
    let outcomes: Vec<&str> = d["issue"]["allowed_outcomes"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|o| o.as_str())
        .collect();
    let partner = funded_partner(&app, "acme", "USDT", "1000000").await;
    let (s, p) = app
        .post("/v1/payouts", TRADER, Some("console-big"), &json!({"account": partner, "network": "ethereum", "asset": "USDT", "destination": DESTINATION, "amount": "150000"}))
        .await;
    assert_eq!(
        (s, p["state"].as_str()),
        (StatusCode::ACCEPTED, Some("pending_approval")),
        "{p}"
    );
    let payout = p["id"].as_str().unwrap().to_owned();
    let hooks = receiver().await;
    let (s, endpoint) = app
        .post(
            "/v1/webhooks/endpoints",
            ADMIN,
            None,
            &json!({"url": hooks.url, "event_types": ["deposit.credited"], "reason": "t"}),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{endpoint}");
    let endpoint = endpoint["id"].as_str().unwrap().to_owned();
    let posted = app.deposit(&buyer, "1", "console-hook-event").await;
    let tx = posted["transaction"]["id"].as_str().unwrap().to_owned();
    // The dead letter of this deposit's event. (An earlier deposit's event may be dead too, when
    // the dispatcher had not yet run when the endpoint was registered.)
    let mut replayed = None;
    for _ in 0..200 {
        let (_, d) = app
            .get(
                &format!("/v1/webhooks/endpoints/{endpoint}/deliveries?state=dead"),
                ADMIN,
            )
            .await;
        for delivery in d["items"].as_array().cloned().unwrap_or_default() {
            let event = delivery["event_id"].as_str().unwrap().to_owned();
            let (_, e) = app
                .get(&format!("/v1/webhooks/events/{event}"), ADMIN)
                .await;
            if e["body"]["data"]["deposit"]["transaction"] == tx.as_str() {
                replayed = Some(event);
            }
        }
        if replayed.is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let replayed = replayed.expect("the deposit's delivery is dead-lettered");
    hooks.ok.store(true, Ordering::SeqCst);
    let mut companies = Vec::new();
    for (name, tier) in [("Alpha", "S"), ("Beta", "M")] {
        let (_, c) = app
            .post(
                "/v1/companies",
                ADMIN,
                None,
                &json!({"name": name, "tier": tier, "reason": "t"}),
            )
            .await;
        companies.push(c["id"].as_str().unwrap().to_owned());
    }
    app.post(
        &format!("/v1/companies/{}/members", companies[0]),
        ADMIN,
        None,
        &json!({"user": "test-trader", "role": "trader", "reason": "t"}),
    )
    .await;
    let (a, b) = (
        app.create_account_for("alpha", &companies[0]).await,
        app.create_account_for("beta", &companies[1]).await,
    );
    app.deposit(&a, "500", "console-alpha").await;
    let (s, pair) = app
        .post("/v1/trust/pairs", ADMIN, None, &json!({"company_a": companies[0], "company_b": companies[1], "account_a": a, "account_b": b,
            "limit_a_to_b": "1000", "limit_b_to_a": "1000", "timezone": "Europe/Warsaw", "cutoff": "17:00", "mode": "partial", "reason": "t"}))
        .await;
    assert_eq!(s, StatusCode::CREATED, "{pair}");
    let pair_id = pair["id"].as_str().unwrap().to_owned();
    let session = pair["open_session"]["id"].as_str().unwrap().to_owned();
    let (s, _) = app
        .post(
            &format!("/v1/trust/pairs/{pair_id}/obligations"),
            TRADER,
            Some("console-ob"),
            &json!({"debtor": companies[0], "amount": "120"}),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED);
    let journal_before = app.get("/v1/journal?limit=500", ADMIN).await.1["items"]
        .as_array()
        .unwrap()
        .len();

    let shots = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("target/console-screenshots");
    std::fs::create_dir_all(&shots).unwrap();
    let out = tokio::process::Command::new("node")
        .arg(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/browser/console.mjs"
        ))
        .env("TOOLS_DIR", concat!(env!("CARGO_MANIFEST_DIR"), "/tools"))
        .env(
            "CONSOLE_BASE",
            format!("http://localhost:{}", app.api.port()),
        )
        .env("SHOTS", &shots)
        .env("ADMIN", ADMIN)
        .env("APPROVER", APPROVER)
        .env("SELF_APPROVER", TRADER_AS_APPROVER)
        .env("OPERATOR", OPERATOR)
        .env("TRADER", TRADER)
        .env("DEAL", &deal)
        .env("OUTCOMES", outcomes.join(","))
        .env("CAP", &cap)
        .env("PAYOUT", &payout)
        .env("REPLAY_EVENT", &replayed)
        .env("ACCOUNT", &partner)
        .env("DESTINATION", DESTINATION)
        .output()
        .await
        .unwrap();
    let said =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "the browser run failed:\n{said}");
    eprintln!("{said}");

    // What the database says happened.
    let (_, d) = app.get(&format!("/v1/deals/{deal}"), OPERATOR).await;
    assert_eq!(
        (
            d["state"].as_str(),
            d["resolution"]["outcome"].as_str(),
            d["resolution"]["by"].as_str()
        ),
        (Some("SETTLED"), Some("OFFSET"), Some("test-operator")),
        "{d}"
    );
    let (_, p) = app.get(&format!("/v1/payouts/{payout}"), ADMIN).await;
    assert_ne!(p["state"], "pending_approval", "{p}");
    assert!(event_kinds(&p).contains(&"approved".to_owned()), "{p}");
    let (_, nets) = app.get("/v1/networks", ADMIN).await;
    assert!(nets[0].get("safe_mode").is_none(), "left safe-mode: {nets}");
    let (_, audit) = app.get("/v1/audit?limit=200", ADMIN).await;
    let actions: Vec<(String, String)> = audit["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| {
            (
                a["action"].as_str().unwrap_or_default().to_owned(),
                a["actor"].as_str().unwrap_or_default().to_owned(),
            )
        })
        .collect();
    for (action, actor) in [
        ("safe_mode.enter", "test-admin"),
        ("safe_mode.leave", "test-admin"),
        ("deal.resolve", "test-operator"),
        ("payout.approve", "test-approver"),
    ] {
        assert!(
            actions.contains(&(action.to_owned(), actor.to_owned())),
            "{action} by {actor} not audited: {actions:?}"
        );
    }
    // Other deposit events reach the healthy receiver too: only the replayed event's own id
    // proves the replay.
    for _ in 0..100 {
        if hooks.delivered.lock().unwrap().contains(&replayed) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let delivered = hooks.delivered.lock().unwrap().clone();
    assert!(
        delivered.contains(&replayed),
        "the replayed event {replayed} was delivered: {delivered:?}"
    );
    let (_, s) = app
        .get(&format!("/v1/trust/sessions/{session}"), ADMIN)
        .await;
    assert_eq!(s["state"], "open", "the dry run closed nothing: {s}");
    // The dry run posted nothing; the other steps posted what they should (resolution, payouts).
    let (_, journal) = app.get("/v1/journal?limit=500", ADMIN).await;
    let eod = journal["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|t| t["memo"].as_str().is_some_and(|m| m.contains("session")))
        .count();
    assert_eq!(eod, 0, "no EOD posting");
    assert!(journal["items"].as_array().unwrap().len() > journal_before);
    for page in [
        "home",
        "disputes",
        "deals",
        "deal",
        "payouts",
        "payout",
        "treasury",
        "webhooks",
        "trust",
        "pilot",
        "dispute-over-cap",
        "payout-approved",
        "eod-dry-run",
    ] {
        assert!(
            shots.join(format!("{page}.png")).is_file(),
            "screenshot {page}"
        );
    }
    miner.abort();
    app.stop().await.unwrap();
}

crate::on_both_backends!(concurrent_recovery_spends_never_bring_a_code_back);

/// Sixteen recovery codes, each spent by two requests at once: exactly one of each pair wins,
/// and when all is done none is left (a read-modify-write would let one spend write back a
/// code the other had just spent).
async fn concurrent_recovery_spends_never_bring_a_code_back(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let store = app.store.clone();
    let codes: Vec<String> = (0..16).map(|i| format!("{i:064x}")).collect();
    store
        .put_console_mfa(&treasuryd::console::MfaEnrolment {
            user: "racer".into(),
            enrolment: "e".into(),
            confirmed_at: Some(1),
            last_step: 0,
            recovery_codes: codes.clone(),
        })
        .await
        .unwrap();
    let spends = codes
        .iter()
        .flat_map(|c| [c.clone(), c.clone()])
        .map(|code| {
            let store = store.clone();
            tokio::spawn(async move { store.spend_recovery_code("racer", &code).await.unwrap() })
        });
    let wins = futures::future::join_all(spends)
        .await
        .into_iter()
        .filter(|won| *won.as_ref().unwrap())
        .count();
    assert_eq!(wins, 16);
    let left = store.console_mfa("racer").await.unwrap().unwrap();
    assert_eq!(left.recovery_codes, Vec::<String>::new());
    app.stop().await.unwrap();
}

/// Bearer guessing from one address gets 429 with Retry-After once it has used up its wrong
/// guesses, and from then even the right token is not judged. A thousand wrong second-factor
/// codes are locked out after a handful: a session at its fifth, the user at their tenth
/// across sessions (429), each lockout audited.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn guessing_tokens_and_codes_is_locked_out_and_audited() {
    let app = TestApp::spawn_with(Backend::Sqlite, |c, _| with_console(c)).await;
    // An admin enrols once; a second browser then stops at the second factor.
    Session::new(&app).sign_in(ADMIN).await;
    let halfway = |app: &TestApp| {
        let mut s = Session::new(app);
        async move {
            let (_, form, _) = s.get("/admin/login").await;
            let nonce = Session::hidden(&form, "login_csrf");
            let (_, _, next) = s
                .post("/admin/login", &[("login_csrf", &nonce), ("token", ADMIN)])
                .await;
            assert_eq!(next.as_deref(), Some("/admin/2fa"));
            let (_, page, _) = s.get("/admin/2fa").await;
            let csrf = Session::hidden(&page, "csrf");
            (s, csrf)
        }
    };
    let (mut s, csrf) = halfway(&app).await;
    let mut answers = std::collections::BTreeMap::<u16, usize>::new();
    for _ in 0..1_000 {
        let (status, _, _) = s
            .post("/admin/2fa", &[("csrf", &csrf), ("code", "000000")])
            .await;
        *answers.entry(status.as_u16()).or_default() += 1;
    }
    // Four judged and wrong, the fifth locks the session; the rest find no session.
    assert_eq!(answers.get(&401), Some(&4), "{answers:?}");
    assert_eq!(answers.get(&403), Some(&1), "{answers:?}");
    assert_eq!(answers.get(&303), Some(&995), "{answers:?}");
    // New sessions: the user has 10 wrong codes in 15 minutes, then 429 unjudged.
    let mut judged = 0;
    let mut throttled = None;
    'sessions: for _ in 0..5 {
        let (mut s, csrf) = halfway(&app).await;
        for _ in 0..5 {
            let r = s
                .post("/admin/2fa", &[("csrf", &csrf), ("code", "000000")])
                .await;
            match r.0 {
                StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => judged += 1,
                StatusCode::TOO_MANY_REQUESTS => {
                    throttled = Some(r);
                    break 'sessions;
                }
                other => panic!("{other}: {}", r.1),
            }
        }
    }
    assert_eq!(
        judged, 5,
        "10 wrong codes per user, 5 used by the first session"
    );
    let (_, page, _) = throttled.expect("the user is throttled");
    assert!(page.contains("Too many wrong attempts"), "{page}");
    let (_, audit) = app.get("/v1/audit?limit=500", ADMIN).await;
    let locked = audit["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["action"] == "console.session_locked")
        .count();
    assert_eq!(locked, 2, "{audit}");

    // Bearer guessing: 20 wrong tokens, then 429 with Retry-After, even for the right one.
    let mut codes = Vec::new();
    for i in 0..25 {
        let (s, _) = app.get("/v1/networks", &format!("tdk_guess_{i}")).await;
        codes.push(s.as_u16());
    }
    assert_eq!(&codes[..20], &[401; 20]);
    assert_eq!(&codes[20..], &[429; 5]);
    let r = app
        .client
        .get(app.url("/v1/networks"))
        .bearer_auth(ADMIN)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::TOO_MANY_REQUESTS);
    let wait: u64 = r.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=60).contains(&wait), "{wait}");
    let metrics = app.metrics_text().await;
    assert_eq!(
        metric_value(&metrics, "treasuryd_auth_failures_total{kind=\"bearer\"}"),
        Some(20.0)
    );
    assert_eq!(
        metric_value(&metrics, "treasuryd_auth_failures_total{kind=\"totp\"}"),
        Some(10.0)
    );
    app.stop().await.unwrap();
}
