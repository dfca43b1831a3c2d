//! `GET /openapi.json`: the API description, generated from the handlers' annotations and the
//! wire types themselves, so a field added to a response is in the document too.

use std::sync::OnceLock;

use axum::http::header;
use axum::response::IntoResponse;
use utoipa::OpenApi;

use super::{
    error, health, judge0, languages, live, metrics, piston, playground, run, sessions, terminal,
};

#[derive(OpenApi)]
#[openapi(
    info(
        title = "runbox",
        description = "Runs untrusted programs in hardened throwaway sandboxes. The prose contract, with what each field means, is docs/API.md."
    ),
    paths(
        run::run_code,
        live::run_socket,
        sessions::create_session,
        sessions::get_session,
        sessions::delete_session,
        sessions::run_in_session,
        terminal::open_terminal,
        languages::list_languages,
        health::get_health,
        health::get_ready,
        metrics::get_metrics,
        get_openapi,
        piston::list_runtimes,
        piston::execute,
        piston::connect::connect,
        piston::list_packages,
        piston::install_package,
        piston::uninstall_package,
        playground::index,
        playground::asset,
        judge0::home,
        judge0::create,
        judge0::index,
        judge0::show,
        judge0::destroy,
        judge0::batch_create,
        judge0::batch_show,
        judge0::languages,
        judge0::all_languages,
        judge0::language,
        judge0::statuses,
        judge0::about,
        judge0::version,
        judge0::config_info,
        judge0::workers,
        judge0::system_info,
        judge0::isolate,
        judge0::license,
        judge0::authenticate,
        judge0::authorize,
    ),
    components(schemas(error::ErrorBody)),
    tags(
        (name = "runs", description = "Run a program once"),
        (name = "sessions", description = "Sandboxes that live across runs, and their shared terminals"),
        (name = "operations", description = "Health, readiness, metrics, this document"),
        (name = "judge0", description = "Judge0 CE 1.13.1, drop-in: submissions and the info routes its clients read (docs/API.md, \"Judge0 CE\")"),
        (name = "piston", description = "Piston v2, drop-in: the same runs in Piston's words (docs/API.md, \"Piston v2\")"),
    )
)]
pub struct ApiDoc;

/// The document, rendered once.
pub fn document() -> &'static str {
    static DOCUMENT: OnceLock<String> = OnceLock::new();
    DOCUMENT.get_or_init(|| {
        ApiDoc::openapi()
            .to_json()
            .expect("the OpenAPI document serialises")
    })
}

#[utoipa::path(get, path = "/openapi.json", tag = "operations", responses(
    (status = 200, description = "This document (OpenAPI 3.1)", content_type = "application/json"),
))]
pub async fn get_openapi() -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "application/json")], document())
}
