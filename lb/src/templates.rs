//! Template overrides from a directory, as marathon-lb reads them from its
//! `templates/`: a file named after a marathon-lb template replaces that
//! part of the configuration. Placeholders are marathon-lb's Python
//! `str.format` fields (`{backend}`; `{{` for a literal brace).
//!
//! Only the operator's directory is read: marathon-lb's per-app template
//! labels (`HAPROXY_0_BACKEND_HEAD`, …) would let any app owner write
//! HAProxy configuration, and are not honoured.

use std::collections::HashMap;
use std::path::Path;

/// The templates that can be overridden, and the fields each may use.
const TEMPLATES: &[(&str, &[&str])] = &[
    ("HAPROXY_HEAD", &["socket", "stateFile", "statsBind"]),
    ("HAPROXY_HTTP_FRONTEND_HEAD", &["httpBind"]),
    ("HAPROXY_HTTP_FRONTEND_APPID_HEAD", &["appidBind"]),
    ("HAPROXY_HTTPS_FRONTEND_HEAD", &["httpsBind", "sslCerts"]),
    (
        "HAPROXY_FRONTEND_HEAD",
        &[
            "backend",
            "bindAddr",
            "servicePort",
            "mode",
            "sslCert",
            "bindOptions",
        ],
    ),
    ("HAPROXY_BACKEND_HEAD", &["backend", "balance", "mode"]),
];

/// Overridden templates, by marathon-lb name.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Templates {
    by_name: HashMap<String, String>,
}

impl Templates {
    /// Reads every file of `dir`; a file that is not a template this
    /// renderer has, or whose fields it cannot fill, is an error naming it.
    pub fn load(dir: &Path) -> Result<Templates, String> {
        let mut by_name = HashMap::new();
        let entries =
            std::fs::read_dir(dir).map_err(|e| format!("templates {}: {e}", dir.display()))?;
        for entry in entries {
            let entry = entry.map_err(|e| format!("templates {}: {e}", dir.display()))?;
            let name = entry.file_name().to_string_lossy().to_string();
            if name.starts_with('.') {
                continue;
            }
            let text = std::fs::read_to_string(entry.path())
                .map_err(|e| format!("template {}: {e}", entry.path().display()))?;
            by_name.insert(name, text);
        }
        Templates::new(by_name)
    }

    /// Templates from name → text, checked as [`Templates::load`] does.
    pub fn new(by_name: HashMap<String, String>) -> Result<Templates, String> {
        for (name, text) in &by_name {
            let Some((_, fields)) = TEMPLATES.iter().find(|(n, _)| n == name) else {
                let known: Vec<&str> = TEMPLATES.iter().map(|(n, _)| *n).collect();
                return Err(format!(
                    "template {name}: not one that can be overridden ({})",
                    known.join(", ")
                ));
            };
            if text.len() > 64 * 1024 {
                return Err(format!("template {name}: larger than 64 KiB"));
            }
            // Every field it uses must be one we fill.
            let sample: HashMap<String, String> = fields
                .iter()
                .map(|f| (f.to_string(), String::new()))
                .collect();
            strfmt::strfmt(text, &sample).map_err(|e| {
                format!(
                    "template {name}: {e} (fields: {})",
                    fields
                        .iter()
                        .map(|f| format!("{{{f}}}"))
                        .collect::<Vec<_>>()
                        .join(", ")
                )
            })?;
            if name == "HAPROXY_HEAD" {
                if !text.contains("expose-fd listeners") {
                    return Err(
                        "template HAPROXY_HEAD: its stats socket needs `expose-fd listeners` \
                         (reloads hand the listening sockets over through it)"
                            .into(),
                    );
                }
                if text.lines().any(|l| l.trim() == "daemon") {
                    return Err("template HAPROXY_HEAD: `daemon` is not allowed (agora lb runs HAProxy in master-worker mode)".into());
                }
                if !text.contains("stats socket {socket}") {
                    return Err("template HAPROXY_HEAD: needs `stats socket {socket} … level admin expose-fd listeners` (agora lb changes servers through it)".into());
                }
            }
        }
        Ok(Templates { by_name })
    }

    /// `name` filled with `fields`, trimmed of its surrounding blank lines;
    /// `None` when not overridden.
    pub fn fill(&self, name: &str, fields: &[(&str, &str)]) -> Option<String> {
        let text = self.by_name.get(name)?;
        let vars: HashMap<String, String> = fields
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        // Checked at load: every field used is filled.
        let filled = strfmt::strfmt(text, &vars).unwrap_or_else(|_| text.clone());
        Some(filled.trim_matches('\n').to_string())
    }
}
