//! `GET /languages`.

use axum::Json;
use axum::extract::State;
use serde::Serialize;

use super::AppState;

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct LanguagesResponse {
    pub languages: Vec<LanguageResponse>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct LanguageResponse {
    pub id: String,
    pub name: String,
    /// Read from the language's image; `null` while the image is missing.
    #[schema(required = true)]
    pub version: Option<String>,
    pub aliases: Vec<String>,
    pub compiled: bool,
    /// The file `code` is written to.
    pub main_file: String,
    /// Whether a room starts an interactive interpreter for it (else a shell).
    pub repl: bool,
    pub timeout_ms: u64,
    pub memory_mb: u64,
    pub max_timeout_ms: u64,
    pub max_memory_mb: u64,
    /// Libraries the image carries beyond the language's own (name as imported, version),
    /// sorted by name; empty while the image is missing.
    pub libraries: Vec<LibraryResponse>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct LibraryResponse {
    pub name: String,
    pub version: String,
}

#[utoipa::path(get, path = "/languages", tag = "runs", responses(
    (status = 200, description = "Every language served", body = LanguagesResponse),
))]
pub async fn list_languages(State(state): State<AppState>) -> Json<LanguagesResponse> {
    let languages = state
        .executor
        .languages()
        .into_iter()
        .map(|info| {
            let l = info.language;
            LanguageResponse {
                id: l.id.clone(),
                name: l.name.clone(),
                version: info.version,
                aliases: l.aliases.clone(),
                compiled: l.is_compiled(),
                main_file: l.main_file.clone(),
                repl: l.repl.is_some(),
                timeout_ms: l.timeout_ms,
                memory_mb: l.memory_mb,
                max_timeout_ms: l.max_timeout_ms,
                max_memory_mb: l.max_memory_mb,
                libraries: info
                    .libraries
                    .into_iter()
                    .map(|(name, version)| LibraryResponse { name, version })
                    .collect(),
            }
        })
        .collect();
    Json(LanguagesResponse { languages })
}
