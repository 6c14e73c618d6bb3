//! What language-server commands take and return, in the shapes of the LSP specification
//! (camelCase on the wire, as LSP and Daytona's toolbox both spell them). Replies from a server
//! are read with `lsp-types` and flattened into these.

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// A language a sandbox can run a language server for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LspLanguage {
    /// Python, served by `pylsp` (python-lsp-server).
    Python,
    /// TypeScript, served by `typescript-language-server --stdio`.
    Typescript,
    /// JavaScript, served by the TypeScript server too.
    Javascript,
}

impl LspLanguage {
    /// Parses a language id (`python`, `typescript`, `javascript`; case-insensitive).
    pub fn parse(id: &str) -> Option<Self> {
        match id.to_ascii_lowercase().as_str() {
            "python" => Some(Self::Python),
            "typescript" => Some(Self::Typescript),
            "javascript" => Some(Self::Javascript),
            _ => None,
        }
    }

    /// Its id, as LSP names it.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Python => "python",
            Self::Typescript => "typescript",
            Self::Javascript => "javascript",
        }
    }

    /// The language server's command line.
    pub(crate) fn command(self) -> Vec<String> {
        match self {
            Self::Python => vec!["pylsp".into()],
            Self::Typescript | Self::Javascript => {
                vec!["typescript-language-server".into(), "--stdio".into()]
            }
        }
    }

    /// The LSP language id of a document this server opens, by its file name.
    pub(crate) fn document_language(self, path: &str) -> &'static str {
        let ext = path.rsplit_once('.').map_or("", |(_, e)| e);
        match (self, ext) {
            (Self::Python, _) => "python",
            (_, "js" | "mjs" | "cjs") => "javascript",
            (_, "jsx") => "javascriptreact",
            (_, "tsx") => "typescriptreact",
            _ => "typescript",
        }
    }
}

/// A position in a document: zero-based line and UTF-16 character offset.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LspPosition {
    /// Line, from 0.
    pub line: u32,
    /// Character in the line, from 0.
    pub character: u32,
}

/// A range in a document.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LspRange {
    /// Where it starts.
    pub start: LspPosition,
    /// Where it ends (exclusive).
    pub end: LspPosition,
}

/// A range in a document named by URI.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LspLocation {
    /// The document (`file://` URI).
    pub uri: String,
    /// The range.
    pub range: LspRange,
}

/// A symbol (function, class, variable, ...) and where it is.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LspSymbol {
    /// Its name.
    pub name: String,
    /// LSP `SymbolKind` (5 class, 6 method, 12 function, 13 variable, ...).
    pub kind: u32,
    /// Where it is.
    pub location: LspLocation,
}

/// How a completion was triggered (LSP `CompletionContext`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CompletionContext {
    /// 1 invoked, 2 a trigger character, 3 re-triggered for an incomplete list.
    pub trigger_kind: u32,
    /// The character that triggered it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trigger_character: Option<String>,
}

/// One completion suggestion.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CompletionItem {
    /// The text shown (and inserted, unless `insert_text` says otherwise).
    pub label: String,
    /// LSP `CompletionItemKind`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<u32>,
    /// Type or signature.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
    /// Documentation: a string, or `{kind, value}` markup.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub documentation: Option<Value>,
    /// Sorts the item among the others.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sort_text: Option<String>,
    /// Filters the item as the user types.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub filter_text: Option<String>,
    /// The text inserted, when it is not the label.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub insert_text: Option<String>,
}

/// Completion suggestions at a position.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CompletionList {
    /// More items may come as the user types.
    pub is_incomplete: bool,
    /// The suggestions.
    pub items: Vec<CompletionItem>,
}

/// Reads a `textDocument/documentSymbol` or `workspace/symbol` reply into flat symbols; nested
/// document symbols are listed parent first, each with the document's URI.
pub(crate) fn symbols_from(reply: Value, document: &str) -> Result<Vec<LspSymbol>, String> {
    if reply.is_null() {
        return Ok(Vec::new());
    }
    let items: Vec<Value> = serde_json::from_value(reply).map_err(|e| e.to_string())?;
    let mut out = Vec::with_capacity(items.len());
    for item in items {
        push_symbol(&mut out, item, document)?;
    }
    Ok(out)
}

fn push_symbol(out: &mut Vec<LspSymbol>, item: Value, document: &str) -> Result<(), String> {
    if item.get("location").is_some() {
        // SymbolInformation, or a WorkspaceSymbol (whose location may lack a range).
        let s: lsp_types::WorkspaceSymbol =
            serde_json::from_value(item).map_err(|e| e.to_string())?;
        let (uri, range) = match s.location {
            lsp_types::OneOf::Left(l) => (l.uri.to_string(), range_of(l.range)),
            lsp_types::OneOf::Right(l) => (l.uri.to_string(), LspRange::default()),
        };
        out.push(LspSymbol {
            name: s.name,
            kind: kind_number(s.kind),
            location: LspLocation { uri, range },
        });
        return Ok(());
    }
    let s: lsp_types::DocumentSymbol = serde_json::from_value(item).map_err(|e| e.to_string())?;
    let mut stack = vec![s];
    while let Some(s) = stack.pop() {
        out.push(LspSymbol {
            name: s.name,
            kind: kind_number(s.kind),
            location: LspLocation {
                uri: document.to_string(),
                range: range_of(s.range),
            },
        });
        stack.extend(s.children.unwrap_or_default().into_iter().rev());
    }
    Ok(())
}

/// Reads a `textDocument/completion` reply (a list, or a bare array of items).
pub(crate) fn completions_from(reply: Value) -> Result<CompletionList, String> {
    if reply.is_null() {
        return Ok(CompletionList {
            is_incomplete: false,
            items: Vec::new(),
        });
    }
    let reply: lsp_types::CompletionResponse =
        serde_json::from_value(reply).map_err(|e| e.to_string())?;
    let (is_incomplete, items) = match reply {
        lsp_types::CompletionResponse::Array(items) => (false, items),
        lsp_types::CompletionResponse::List(l) => (l.is_incomplete, l.items),
    };
    let items = items
        .into_iter()
        .map(|i| CompletionItem {
            label: i.label,
            kind: i
                .kind
                .and_then(|k| serde_json::to_value(k).ok()?.as_u64())
                .map(|k| k as u32),
            detail: i.detail,
            documentation: i.documentation.and_then(|d| serde_json::to_value(d).ok()),
            sort_text: i.sort_text,
            filter_text: i.filter_text,
            insert_text: i.insert_text,
        })
        .collect();
    Ok(CompletionList {
        is_incomplete,
        items,
    })
}

fn range_of(r: lsp_types::Range) -> LspRange {
    let p = |p: lsp_types::Position| LspPosition {
        line: p.line,
        character: p.character,
    };
    LspRange {
        start: p(r.start),
        end: p(r.end),
    }
}

fn kind_number(kind: lsp_types::SymbolKind) -> u32 {
    serde_json::to_value(kind)
        .ok()
        .and_then(|v| v.as_u64())
        .map_or(0, |k| k as u32)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn range(l0: u32, l1: u32) -> Value {
        json!({"start": {"line": l0, "character": 0}, "end": {"line": l1, "character": 1}})
    }

    #[test]
    fn flat_and_nested_symbols_read_the_same() {
        let flat = json!([
            {"name": "Greeter", "kind": 5, "location": {"uri": "file:///p/a.py", "range": range(0, 3)}},
            {"name": "q", "kind": 13, "location": {"uri": "file:///p/b.py"}},
        ]);
        let got = symbols_from(flat, "file:///p/a.py").unwrap();
        assert_eq!(got[0].name, "Greeter");
        assert_eq!((got[0].kind, got[0].location.range.end.line), (5, 3));
        assert_eq!(got[1].location.uri, "file:///p/b.py");
        let nested = json!([{
            "name": "Greeter", "kind": 5, "range": range(0, 3), "selectionRange": range(0, 0),
            "children": [{"name": "hello", "kind": 6, "range": range(1, 2), "selectionRange": range(1, 1)}],
        }]);
        let got = symbols_from(nested, "file:///p/a.py").unwrap();
        let names: Vec<_> = got.iter().map(|s| (s.name.as_str(), s.kind)).collect();
        assert_eq!(names, vec![("Greeter", 5), ("hello", 6)]);
        assert_eq!(got[1].location.uri, "file:///p/a.py");
        assert!(symbols_from(Value::Null, "x").unwrap().is_empty());
        assert!(symbols_from(json!({"not": "a list"}), "x").is_err());
    }

    #[test]
    fn completions_read_from_a_list_or_an_array() {
        let list = json!({"isIncomplete": true, "items": [
            {"label": "greet", "kind": 3, "detail": "greet(name)", "documentation": {"kind": "markdown", "value": "Says hi"}},
        ]});
        let got = completions_from(list).unwrap();
        assert!(got.is_incomplete);
        assert_eq!(
            (got.items[0].label.as_str(), got.items[0].kind),
            ("greet", Some(3))
        );
        assert_eq!(
            got.items[0].documentation,
            Some(json!({"kind": "markdown", "value": "Says hi"}))
        );
        let array = completions_from(json!([{"label": "x"}])).unwrap();
        assert!(!array.is_incomplete && array.items.len() == 1);
    }

    #[test]
    fn languages_and_document_ids() {
        assert_eq!(
            LspLanguage::parse("TypeScript"),
            Some(LspLanguage::Typescript)
        );
        assert_eq!(LspLanguage::parse("rust"), None);
        assert_eq!(
            LspLanguage::Typescript.document_language("/p/a.js"),
            "javascript"
        );
        assert_eq!(
            LspLanguage::Javascript.document_language("/p/a.ts"),
            "typescript"
        );
        assert_eq!(LspLanguage::Python.document_language("/p/a.pyi"), "python");
    }
}
