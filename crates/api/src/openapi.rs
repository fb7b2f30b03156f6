//! The OpenAPI 3.1 document, generated from the handlers' annotations and
//! the request and response types, so it cannot drift from the code.
//! Served at `/v1/openapi.json` and committed as `docs/openapi.json` (a test
//! fails when the committed copy is out of date).

use utoipa::openapi::path::{Operation, PathItem};
use utoipa::openapi::security::{Http, HttpAuthScheme, SecurityScheme};
use utoipa::openapi::{ContentBuilder, Ref, RefOr, Response, ResponseBuilder};
use utoipa::{Modify, OpenApi};

use crate::error::{ErrorBody, ErrorDetail, FieldProblem};
use crate::routes::{audit, badges, community, members, rules, scores, sync, webhooks};

#[derive(OpenApi)]
#[openapi(
    info(
        title = "Gatehouse admin API",
        description = "A community's rules, members, scores, badges, audit log and sync status. \
                       Every request carries one community's API key and acts inside that community only. \
                       See docs/api.md.",
        version = "1"
    ),
    paths(
        community::get, community::patch,
        rules::list, rules::create, rules::get, rules::update, rules::enable, rules::disable,
        rules::delete, rules::preview,
        members::list, members::detail, members::recheck,
        scores::set, scores::import,
        badges::list, badges::define, badges::grant, badges::revoke,
        audit::list,
        sync::get,
        webhooks::list, webhooks::register, webhooks::delete, webhooks::deliveries,
    ),
    components(schemas(ErrorBody, ErrorDetail, FieldProblem)),
    modifiers(&ApiKeyAuth),
    tags(
        (name = "community", description = "The key's community"),
        (name = "rules", description = "Eligibility rules and the dry-run preview"),
        (name = "members", description = "Members, their wallets, roles and rule outcomes"),
        (name = "scores", description = "The community's own scores"),
        (name = "badges", description = "Badges"),
        (name = "audit", description = "The audit log"),
        (name = "sync", description = "Role sync status"),
        (name = "webhooks", description = "Signed event deliveries to the community's endpoints"),
    )
)]
pub struct ApiDoc;

struct ApiKeyAuth;

impl Modify for ApiKeyAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        let mut scheme = Http::new(HttpAuthScheme::Bearer);
        scheme.bearer_format = Some("ghk_<prefix>_<secret>".to_owned());
        scheme.description = Some(
            "A community API key from `gatehouse keys create`. Scopes: read, rules:write, \
             badges:write, members:write, webhooks:write."
                .to_owned(),
        );
        components.add_security_scheme("api_key", SecurityScheme::Http(scheme));
        // Answers any `/v1` endpoint may give, whatever it does: documented
        // once here rather than on every handler.
        let common = [
            ("400", "The request's query or body could not be read"),
            ("401", "No API key, or not a live one"),
            ("413", "The body is larger than this endpoint accepts"),
            ("429", "The key's rate limit was reached; see Retry-After"),
            ("503", "Timed out, or a dependency is unavailable; retry"),
        ];
        for item in openapi.paths.paths.values_mut() {
            for operation in operations(item) {
                for (status, description) in common {
                    operation
                        .responses
                        .responses
                        .entry(status.to_owned())
                        .or_insert_with(|| error_response(description));
                }
                if operation.request_body.is_some() {
                    operation
                        .responses
                        .responses
                        .entry("422".to_owned())
                        .or_insert_with(|| {
                            error_response("The body does not have the documented fields and types")
                        });
                }
            }
        }
    }
}

fn operations(item: &mut PathItem) -> impl Iterator<Item = &mut Operation> {
    [
        item.get.as_mut(),
        item.put.as_mut(),
        item.post.as_mut(),
        item.delete.as_mut(),
        item.patch.as_mut(),
    ]
    .into_iter()
    .flatten()
}

fn error_response(description: &str) -> RefOr<Response> {
    RefOr::T(
        ResponseBuilder::new()
            .description(description)
            .content(
                "application/json",
                ContentBuilder::new()
                    .schema(Some(Ref::from_schema_name("ErrorBody")))
                    .build(),
            )
            .build(),
    )
}

/// The document as served and committed.
pub fn document() -> String {
    ApiDoc::openapi().to_pretty_json().unwrap_or_else(|e| {
        format!("{{\"error\": \"could not render the OpenAPI document: {e}\"}}")
    })
}
