//! `cohort release edit KEY`: the release as JSON in `$EDITOR`, written back only if
//! nobody changed it meanwhile.
//!
//! The flow: read the release (its revision), write its editable fields to a temporary
//! file, run the editor, and `PUT` the result with `If-Match` of the revision read. An
//! unchanged document writes nothing. When the text cannot be written (not JSON, refused
//! by the server, or a concurrent change) the file is kept and named, so nothing typed is
//! lost; the editor is never re-opened behind the operator's back.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::{Map, Value};

use super::ClientArgs;
use super::client::CohortClient;
use super::commands::{CliError, now_ms};
use super::output;

/// The fields `PUT /releases/{key}` takes, in the order a person reads them. The rest
/// of the view (revision, kill state, ramp) is changed by its own commands.
const EDITABLE: [&str; 13] = [
    "key",
    "description",
    "versions",
    "unit",
    "salt",
    "bucketing",
    "allocation",
    "audience",
    "rules",
    "overrides",
    "values",
    "fleet",
    "fleet_nodes",
];

/// The editable document of a release as the API shows it. A salt equal to the key is
/// the default and left out, so an edit does not pin it.
pub fn editable(view: &Value) -> Value {
    let mut doc = Map::new();
    for field in EDITABLE {
        match view.get(field) {
            None | Some(Value::Null) => {}
            Some(Value::String(salt)) if field == "salt" && view.get("key") == Some(&Value::String(salt.clone())) => {}
            Some(value) => {
                doc.insert(field.to_owned(), value.clone());
            }
        }
    }
    Value::Object(doc)
}

pub async fn edit(client: &CohortClient, args: &ClientArgs, key: &str, dry_run: bool) -> Result<String, CliError> {
    let current = client.get_release(key).await?;
    let revision = current.etag.unwrap_or(current.value.revision);
    let before = editable(&current.body);
    // Pretty-printing a `Value` cannot fail.
    let text = serde_json::to_string_pretty(&before).unwrap_or_default() + "\n";
    let path = temp_path(&args.env, key);
    write_new(&path, &text)?;

    if let Err(err) = run_editor(&path).await {
        let _ = std::fs::remove_file(&path);
        return Err(err);
    }
    let edited = std::fs::read_to_string(&path).map_err(|source| CliError::ReadFile { path: path.clone(), source })?;
    let after: Value = match serde_json::from_str(&edited) {
        Ok(value @ Value::Object(_)) => value,
        Ok(_) => return Err(CliError::EditedInvalid { path, reason: "expected a JSON object".into() }),
        Err(e) => return Err(CliError::EditedInvalid { path, reason: e.to_string() }),
    };
    if after == before {
        let _ = std::fs::remove_file(&path);
        return Ok(format!("no change to {key}; nothing written (revision {revision})\n"));
    }
    let changes = output::render_diff(&before, &after);
    if dry_run {
        let _ = std::fs::remove_file(&path);
        let mut out = format!("dry run: would update {key} at revision {revision}; nothing written\n");
        for line in &changes {
            out.push_str(&format!("  {line}\n"));
        }
        return Ok(if args.json {
            output::render_json(&serde_json::json!({
                "dry_run": true, "before": before, "after": after, "changes": changes,
            }))
        } else {
            out
        });
    }
    match client.replace_release(key, &after, Some(revision)).await {
        Ok(reply) => {
            let _ = std::fs::remove_file(&path);
            if args.json {
                return Ok(output::render_json(&reply.body));
            }
            let mut out = format!("updated {key} at revision {}\n", reply.value.revision);
            for line in &changes {
                out.push_str(&format!("  {line}\n"));
            }
            Ok(out)
        }
        Err(err) if err.status().is_some_and(|s| s.as_u16() == 412) => {
            Err(CliError::EditConflict { key: key.to_owned(), changed: who_changed(client, key, revision).await, path })
        }
        Err(source) => Err(CliError::EditRefused { path, source }),
    }
}

/// `changed by alice 20 s ago (revision 9)`, from the newest audit entry of the release.
async fn who_changed(client: &CohortClient, key: &str, read: u64) -> String {
    match client.audit(Some(key), 1, None).await.ok().and_then(|page| page.value.entries.into_iter().next()) {
        Some(entry) if entry.revision > read => {
            let ago = Duration::from_millis(now_ms().saturating_sub(entry.time_ms));
            format!("changed by {} {} (revision {})", entry.actor, ago_text(ago), entry.revision)
        }
        _ => format!("changed by someone since revision {read}"),
    }
}

/// `20 s ago` below two minutes, then `3m 12s ago`.
pub fn ago_text(ago: Duration) -> String {
    let secs = ago.as_secs();
    if secs < 120 {
        format!("{secs} s ago")
    } else {
        format!("{} ago", humantime::format_duration(Duration::from_secs(secs)))
    }
}

/// `$EDITOR` (else `vi`) on `path`, through `sh` so that `EDITOR="code --wait"` works as
/// it does for git.
async fn run_editor(path: &Path) -> Result<(), CliError> {
    let editor = std::env::var("EDITOR").ok().filter(|e| !e.trim().is_empty()).unwrap_or_else(|| "vi".to_owned());
    let mut command = std::process::Command::new("sh");
    command.arg("-c").arg(format!("{editor} \"$1\"")).arg("sh").arg(path);
    let status = tokio::task::spawn_blocking(move || command.status())
        .await
        .map_err(|e| CliError::Editor { editor: editor.clone(), reason: e.to_string() })?;
    match status {
        Ok(status) if status.success() => Ok(()),
        Ok(status) => Err(CliError::Editor { editor, reason: format!("exited with {status}") }),
        Err(e) => Err(CliError::Editor { editor, reason: format!("could not run: {e}") }),
    }
}

/// A fresh file in the temporary directory, e.g. `cohort-edit-production-checkout-4242-1.json`.
/// Written by hand rather than with `tempfile` (a dev-dependency only), since the file
/// must outlive the process when the edit fails.
fn temp_path(env: &str, key: &str) -> PathBuf {
    let safe = |s: &str| {
        s.chars().map(|c| if c.is_ascii_alphanumeric() || c == '-' || c == '_' { c } else { '_' }).collect::<String>()
    };
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.subsec_nanos());
    std::env::temp_dir().join(format!("cohort-edit-{}-{}-{}-{nanos}.json", safe(env), safe(key), std::process::id()))
}

fn write_new(path: &Path, text: &str) -> Result<(), CliError> {
    let temp = |source| CliError::TempFile { path: path.to_owned(), source };
    let mut file = std::fs::OpenOptions::new().write(true).create_new(true).open(path).map_err(temp)?;
    file.write_all(text.as_bytes()).map_err(temp)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn the_editable_document_leaves_out_state_and_a_default_salt() {
        let view = json!({
            "key": "checkout", "versions": ["v1", "v2"], "salt": "checkout", "allocation": {"v2": 5.0},
            "killed": true, "kill_reason": "x", "revision": 7, "ramp": {"state": "running"}, "fleet": null,
        });
        assert_eq!(editable(&view), json!({"key": "checkout", "versions": ["v1", "v2"], "allocation": {"v2": 5.0}}));
        let salted = json!({"key": "checkout", "versions": ["v1"], "salt": "s1"});
        assert_eq!(editable(&salted)["salt"], "s1");
    }

    #[test]
    fn ages_read_in_seconds_then_minutes() {
        assert_eq!(ago_text(Duration::from_secs(20)), "20 s ago");
        assert_eq!(ago_text(Duration::from_secs(192)), "3m 12s ago");
    }
}
