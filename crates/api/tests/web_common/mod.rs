//! The dashboard under test: an `api` server with the dashboard enabled,
//! pointed at a real Discord simulator's OAuth2 over HTTP, and a tiny
//! browser (a cookie jar over reqwest, redirects followed by hand so each
//! hop can be inspected).
#![allow(dead_code)] // each test file uses its own part of the harness

use std::collections::BTreeMap;
use std::time::Duration;

use api::{ApiSettings, DashboardSettings};
use discord_sim::{permissions, GuildsSpec, OAuthUser, SimConfig, Simulator};
use domain::CommunityRef;
use reqwest::header::{HeaderMap, LOCATION, SET_COOKIE};
use settings::Secret;
use wire::{GuildId, UserId};

use crate::common::Api;

pub const SESSION_SECRET: &str = "a test session secret, long enough: 0123456789abcdef";

pub struct Dash {
    pub api: Api,
    pub sim: Simulator,
    /// A guild the bot serves (a community exists).
    pub guild: GuildId,
    pub community: CommunityRef,
    /// A guild the bot is not in (no community).
    pub botless: GuildId,
}

pub struct Options {
    pub permission_refresh: Duration,
    /// When set, the dashboard's public address (not where it listens).
    pub public_url: Option<String>,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            permission_refresh: Duration::from_secs(300),
            public_url: None,
        }
    }
}

impl Dash {
    pub async fn start(label: &str) -> Dash {
        Self::start_with(label, Options::default()).await
    }

    pub async fn start_with(label: &str, options: Options) -> Dash {
        let mut config = testkit::sim::fast_config("Bot dashboard-test");
        if let Some(public) = &options.public_url {
            config.oauth2.redirect_uris = vec![format!("{public}/login/callback")];
        }
        let sim = Simulator::start(config).await.expect("the simulator");
        let guilds = sim.control().create_guilds(&GuildsSpec {
            count: 2,
            members_per_guild: 3,
            roles_per_guild: 2,
        });
        let (guild, botless) = (guilds[0], guilds[1]);
        let sim_config: SimConfig = sim.config().clone();
        let discord_url = sim.api_url();
        let public = options.public_url.clone();
        let api = Api::start_dressed(
            label,
            ApiSettings::default(),
            eligibility::EligibilityConfig::default(),
            move |state, url| {
                let settings = DashboardSettings {
                    public_url: public.as_deref().unwrap_or(url).parse().expect("a URL"),
                    client_id: sim_config.application_id.to_string(),
                    client_secret: Secret::new(sim_config.oauth2.client_secret.clone()),
                    discord_url: discord_url.parse().expect("a URL"),
                    session_secret: Secret::new(SESSION_SECRET),
                    session_idle: DashboardSettings::DEFAULT_IDLE,
                    session_lifetime: DashboardSettings::DEFAULT_LIFETIME,
                    permission_refresh: options.permission_refresh,
                    discord_timeout: Duration::from_secs(3),
                };
                state.with_dashboard(settings).expect("dashboard settings")
            },
        )
        .await;
        let community = api.community(guild.get()).await;
        Dash {
            api,
            sim,
            guild,
            community,
            botless,
        }
    }

    /// A person who can log in, with `bits` in both guilds.
    pub fn person(&self, id: u64, name: &str, bits: u64) -> UserId {
        let user = UserId::new(id).expect("a user id");
        self.sim
            .control()
            .add_oauth_user(OAuthUser::new(user, name));
        for guild in [self.guild, self.botless] {
            self.sim
                .control()
                .set_member_permissions(guild, user, bits)
                .expect("permissions");
        }
        user
    }

    pub fn admin(&self, id: u64) -> UserId {
        self.person(id, "admin", permissions::MANAGE_GUILD)
    }

    pub fn browser(&self) -> Browser {
        Browser::new(&self.api.url)
    }

    /// Logs `user` in through the simulator's OAuth2, as a browser would.
    pub async fn login(&self, user: UserId) -> Browser {
        let mut browser = self.browser();
        let authorize = browser.start_login().await;
        let callback = self.approve(&authorize, user).await;
        let page = browser.get_url(&callback).await;
        assert_eq!(page.status, 303, "the callback signs in: {}", page.body);
        assert_eq!(page.location(), Some("/dashboard"));
        assert!(browser.session().is_some(), "a session cookie is set");
        browser
    }

    /// The person approves at Discord: the simulator's redirect back.
    pub async fn approve(&self, authorize: &str, user: UserId) -> String {
        let response = no_redirects()
            .get(format!("{authorize}&login_as={user}"))
            .send()
            .await
            .expect("the simulator's authorize");
        assert_eq!(response.status().as_u16(), 302, "the simulator approves");
        response
            .headers()
            .get(LOCATION)
            .and_then(|v| v.to_str().ok())
            .expect("a redirect back")
            .to_owned()
    }

    /// Rows of the sessions table, as superuser.
    pub async fn session_rows(&self) -> i64 {
        self.api.db.count("SELECT count(*) FROM web_sessions").await
    }
}

fn no_redirects() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("a client")
}

#[derive(Debug)]
pub struct Page {
    pub status: u16,
    pub headers: HeaderMap,
    pub body: String,
}

impl Page {
    pub fn location(&self) -> Option<&str> {
        self.header("location")
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    pub fn set_cookies(&self) -> Vec<String> {
        self.headers
            .get_all(SET_COOKIE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .map(str::to_owned)
            .collect()
    }

    /// The CSRF token the page's forms carry.
    pub fn csrf(&self) -> String {
        let marker = r#"name="csrf" value=""#;
        let start = self.body.find(marker).expect("a form with a CSRF field") + marker.len();
        let end = self.body[start..].find('"').expect("the field's end");
        self.body[start..start + end].to_owned()
    }
}

/// A cookie jar over reqwest, following no redirect by itself.
pub struct Browser {
    base: String,
    http: reqwest::Client,
    pub cookies: BTreeMap<String, String>,
}

impl Browser {
    pub fn new(base: &str) -> Browser {
        Browser {
            base: base.to_owned(),
            http: no_redirects(),
            cookies: BTreeMap::new(),
        }
    }

    pub fn session(&self) -> Option<&String> {
        self.cookies
            .iter()
            .find(|(k, _)| k.ends_with("gatehouse_session"))
            .map(|(_, v)| v)
    }

    fn cookie_header(&self) -> String {
        self.cookies
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join("; ")
    }

    async fn send(&mut self, request: reqwest::RequestBuilder) -> Page {
        let request = if self.cookies.is_empty() {
            request
        } else {
            request.header("cookie", self.cookie_header())
        };
        let response = request.send().await.expect("the dashboard answers");
        let page = Page {
            status: response.status().as_u16(),
            headers: response.headers().clone(),
            body: response.text().await.unwrap_or_default(),
        };
        for cookie in page.set_cookies() {
            let first = cookie.split(';').next().unwrap_or("");
            if let Some((name, value)) = first.split_once('=') {
                if value.is_empty() || cookie.contains("Max-Age=0") {
                    self.cookies.remove(name);
                } else {
                    self.cookies.insert(name.to_owned(), value.to_owned());
                }
            }
        }
        page
    }

    pub async fn get(&mut self, path: &str) -> Page {
        let url = format!("{}{path}", self.base);
        self.get_url(&url).await
    }

    /// A URL that may name another host (a public address): only its path
    /// and query are sent, to this server.
    pub async fn get_url(&mut self, url: &str) -> Page {
        let parsed = reqwest::Url::parse(url).expect("a URL");
        let local = format!(
            "{}{}{}",
            self.base,
            parsed.path(),
            parsed.query().map(|q| format!("?{q}")).unwrap_or_default()
        );
        let request = self.http.get(local);
        self.send(request).await
    }

    pub async fn post(&mut self, path: &str, form: &[(&str, &str)]) -> Page {
        let request = self.http.post(format!("{}{path}", self.base)).form(form);
        self.send(request).await
    }

    /// GET /login/start: the address at Discord it redirects to.
    pub async fn start_login(&mut self) -> String {
        let page = self.get("/login/start").await;
        assert_eq!(page.status, 303, "login starts with a redirect");
        page.location().expect("a Location").to_owned()
    }
}

/// A query parameter of a URL.
pub fn query_param(url: &str, name: &str) -> Option<String> {
    reqwest::Url::parse(url)
        .ok()?
        .query_pairs()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.into_owned())
}
