//! A session's terminal (its room): joining it, and starting the REPL. The first client to
//! join starts the session language's REPL; `start` replaces it, with another language if
//! asked (the session then moves to that language's image, its files carried over). Leaving does not end anything: the session lives until it expires, and an
//! attended session does not go idle.

use std::time::SystemTime;

use super::{LiveSession, SessionError, Sessions};
use crate::executor::JobError;
use crate::rooms::TerminalClient;

/// Program started on the terminal of a language without a REPL.
const SHELL: &str = "bash";

impl Sessions {
    /// Joins the session's room; the first client ever starts the REPL.
    pub async fn attach(&self, id: &str) -> Result<TerminalClient, SessionError> {
        let live = self.live(id)?;
        let (sessions, session_id) = (self.clone(), id.to_owned());
        let attached = TerminalClient::join(
            &live.terminal,
            live.ended.clone(),
            self.inner.stop.clone(),
            move |last| {
                if last {
                    // The idle timeout counts from the last client's leaving.
                    sessions.inner.store.touch(&session_id, SystemTime::now());
                }
            },
        );
        // Not counted against the start rate: joining is rate-limited as a route.
        if live.terminal.claim_first_start()
            && let Err(err) = self.start_program(id, &live, None).await
        {
            live.terminal.release_first_start();
            return Err(err);
        }
        Ok(attached)
    }

    /// A client's `start`: replaces the REPL (with `language`'s, or the session language's),
    /// at most `terminal.starts_per_minute` times a minute per terminal.
    pub async fn start_terminal(
        &self,
        id: &str,
        language: Option<&str>,
    ) -> Result<(), SessionError> {
        let live = self.live(id)?;
        if live.ended.is_cancelled() {
            return Err(SessionError::NotFound);
        }
        live.terminal.admit_start()?;
        self.start_program(id, &live, language).await
    }

    /// Ends the terminal's program (and every process of the program user: no run is in
    /// progress while the slot is held) and starts `language`'s REPL, or the session
    /// language's. Another language's image means another sandbox, with the files copied.
    async fn start_program(
        &self,
        id: &str,
        live: &LiveSession,
        language: Option<&str>,
    ) -> Result<(), SessionError> {
        let mut slot = live.slot.lock().await;
        let current = slot.as_ref().ok_or(SessionError::NotFound)?;
        let mut language = match language {
            None => current.language.clone(),
            Some(name) => self
                .inner
                .executor
                .catalogue()
                .resolve(name)
                .cloned()
                .ok_or_else(|| JobError::UnknownLanguage(name.chars().take(64).collect()))?,
        };
        let mut not_moved = None;
        if language.image_ref() == current.language.image_ref() {
            live.terminal.stop_program();
            if let Err(err) = current.sandbox.end_all_programs().await {
                // The old program holds the sandbox (a fork bomb at the pids cap): as after
                // such a run, the session goes on in a fresh sandbox, without its files.
                tracing::warn!(session = %super::log_tag(id), error = %err, "terminal start replaces the sandbox");
                *slot = None;
                let sandbox = self.new_sandbox(id, &language, self.created_at(id)).await?;
                self.install(id, &mut slot, sandbox, language.clone()).await;
            }
        } else {
            // The new sandbox first: when it cannot be made, the REPL goes on untouched.
            let fresh = self.new_sandbox(id, &language, self.created_at(id)).await?;
            // Nothing may write the files while they are packed.
            live.terminal.stop_program();
            let moved = match current.sandbox.end_all_programs().await {
                Ok(()) => current.sandbox.copy_work_dir_into(&fresh).await,
                Err(err) => Err(err),
            };
            match moved {
                Ok(()) => {
                    // The old sandbox, its REPL with it, is removed as it is dropped here.
                    self.install(id, &mut slot, fresh, language.clone()).await;
                }
                Err(err) => {
                    // The files stay where they are, and so does the language: the REPL
                    // starts again as it was, and the client hears why nothing moved.
                    tracing::warn!(session = %super::log_tag(id), error = %err, "the work dir could not be moved to another image");
                    drop(fresh);
                    not_moved = Some(err);
                    language = current.language.clone();
                }
            }
        }
        let current = slot.as_ref().ok_or(SessionError::NotFound)?;
        let cmd = language
            .repl
            .clone()
            .unwrap_or_else(|| vec![SHELL.to_owned()]);
        let (cols, rows) = live.terminal.size();
        let (input, output) = current.sandbox.open_terminal(cmd, cols, rows).await?;
        live.terminal.attach_program(
            input,
            output,
            self.inner.stop.child_token(),
            &self.inner.tasks,
        );
        match not_moved {
            None => Ok(()),
            Some(err) => Err(err.into()),
        }
    }
}
