//! Chat templates: the model's Jinja template (tokenizer_config.json's `chat_template`, or a
//! chat_template.jinja file), rendered with minijinja as transformers renders it (trim_blocks,
//! lstrip_blocks, loop controls, Python string methods, its `tojson`), or the demo model's.

use std::path::Path;

use minijinja::{Environment, Error as JinjaError, ErrorKind};
use serde::Serialize;
use serde_json::{Map, Value};

use crate::error::{Error, Result};

/// Plain ChatML: the turns and nothing else (for templates written by hand and tests).
pub const CHATML: &str = "{% for message in messages %}<|im_start|>{{ message.role }}\n{{ message.content }}<|im_end|>\n{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}";

/// Instructions a template may execute per render: hostile input cannot make it loop forever.
const FUEL: u64 = 5_000_000;

/// A compiled chat template.
pub struct ChatTemplate {
    env: Environment<'static>,
}

/// What a template renders: the messages (OpenAI's shape: role, content, tool_calls, ...),
/// the tools, and the request's `chat_template_kwargs` (e.g. `enable_thinking`).
#[derive(Debug, Clone, Default)]
pub struct ChatInput<'a> {
    /// The conversation.
    pub messages: &'a [Value],
    /// Tool definitions, when the request has any.
    pub tools: Option<&'a [Value]>,
    /// Extra template variables.
    pub kwargs: Map<String, Value>,
}

impl ChatTemplate {
    /// Compiles `source`.
    pub fn new(source: &str) -> Result<Self> {
        let mut env = Environment::new();
        minijinja_contrib::add_to_environment(&mut env);
        env.set_unknown_method_callback(minijinja_contrib::pycompat::unknown_method_callback);
        // transformers' environment: these change the whitespace templates produce.
        env.set_syntax(
            minijinja::syntax::SyntaxConfig::builder()
                .trim_blocks(true)
                .lstrip_blocks(true)
                .build()
                .map_err(|e| Error::Tokenizer(format!("chat template syntax: {e}")))?,
        );
        env.set_fuel(Some(FUEL));
        env.add_function(
            "raise_exception",
            |msg: String| -> std::result::Result<String, JinjaError> {
                Err(JinjaError::new(ErrorKind::InvalidOperation, msg))
            },
        );
        env.add_filter("tojson", tojson);
        env.add_template_owned("chat", source.to_string())
            .map_err(|e| Error::Tokenizer(format!("chat template does not compile: {e}")))?;
        Ok(ChatTemplate { env })
    }

    /// The template of a model directory (chat_template.jinja, else tokenizer_config.json's
    /// chat_template), plain ChatML when it has none, or the demo model's without a directory.
    pub fn from_model_dir(dir: Option<&Path>) -> Result<Self> {
        let Some(dir) = dir else {
            return Self::new(crate::model::demo::CHAT_TEMPLATE);
        };
        let jinja = dir.join("chat_template.jinja");
        if jinja.exists() {
            let text = std::fs::read_to_string(&jinja).map_err(|e| Error::io(&jinja, e))?;
            return Self::new(&text);
        }
        let path = dir.join("tokenizer_config.json");
        if !path.exists() {
            return Self::new(CHATML);
        }
        let text = std::fs::read_to_string(&path).map_err(|e| Error::io(&path, e))?;
        let v: Value = serde_json::from_str(&text)
            .map_err(|e| Error::Tokenizer(format!("{}: malformed JSON: {e}", path.display())))?;
        match v.get("chat_template") {
            Some(Value::String(s)) => Self::new(s),
            // A list of named templates: use "default".
            Some(Value::Array(list)) => {
                let t = list
                    .iter()
                    .find(|t| t.get("name").and_then(Value::as_str) == Some("default"))
                    .and_then(|t| t.get("template")?.as_str())
                    .ok_or_else(|| Error::Tokenizer("no default chat template".into()))?;
                Self::new(t)
            }
            _ => Self::new(CHATML),
        }
    }

    /// Renders a conversation with the assistant's turn opened.
    pub fn render(&self, input: &ChatInput<'_>) -> Result<String> {
        let mut ctx = input.kwargs.clone();
        ctx.insert("messages".into(), Value::Array(input.messages.to_vec()));
        if let Some(tools) = input.tools {
            ctx.insert("tools".into(), Value::Array(tools.to_vec()));
        }
        ctx.entry("add_generation_prompt")
            .or_insert(Value::Bool(true));
        let tmpl = self
            .env
            .get_template("chat")
            .map_err(|e| Error::Tokenizer(e.to_string()))?;
        tmpl.render(minijinja::Value::from(minijinja::value::Serde(&ctx)))
            .map_err(|e| Error::InvalidRequest(format!("chat template failed: {e}")))
    }

    /// Renders `(role, content)` messages (plain text turns, no tools).
    pub fn render_text(&self, messages: &[(String, String)]) -> Result<String> {
        let msgs: Vec<Value> = messages
            .iter()
            .map(|(r, c)| serde_json::json!({"role": r, "content": c}))
            .collect();
        self.render(&ChatInput {
            messages: &msgs,
            ..Default::default()
        })
    }
}

/// transformers' `tojson`: Python's `json.dumps(x, ensure_ascii=False)`, keys in their order,
/// `", "` and `": "` between items (minijinja's own escapes HTML and packs items tightly,
/// which would change the prompt a model was trained on).
fn tojson(
    v: minijinja::Value,
    kwargs: minijinja::value::Kwargs,
) -> std::result::Result<minijinja::Value, JinjaError> {
    let indent: Option<usize> = kwargs.get("indent")?;
    let sort_keys: Option<bool> = kwargs.get("sort_keys")?;
    kwargs.assert_all_used()?;
    let mut json = serde_json::to_value(&v)
        .map_err(|e| JinjaError::new(ErrorKind::InvalidOperation, e.to_string()))?;
    if sort_keys == Some(true) {
        sort_keys_of(&mut json);
    }
    Ok(minijinja::Value::from_safe_string(py_json_indent(
        &json, indent,
    )))
}

fn sort_keys_of(v: &mut Value) {
    match v {
        Value::Object(m) => {
            m.sort_keys();
            m.values_mut().for_each(sort_keys_of);
        }
        Value::Array(a) => a.iter_mut().for_each(sort_keys_of),
        _ => {}
    }
}

/// `v` as Python's `json.dumps(v, ensure_ascii=False)` writes it.
pub fn py_json(v: &Value) -> String {
    py_json_indent(v, None)
}

fn py_json_indent(v: &Value, indent: Option<usize>) -> String {
    let mut out = Vec::new();
    let fmt = PyFormatter {
        indent: indent.map(|n| " ".repeat(n).into_bytes()),
        depth: 0,
        has_value: false,
    };
    let mut ser = serde_json::Serializer::with_formatter(&mut out, fmt);
    // Writing a Value into memory cannot fail, and serde_json writes UTF-8.
    v.serialize(&mut ser).expect("serializing a JSON value");
    String::from_utf8(out).expect("serde_json writes UTF-8")
}

/// Python's json.dumps layout: `", "`/`": "` inline, or one item per line with `indent`.
struct PyFormatter {
    indent: Option<Vec<u8>>,
    depth: usize,
    /// Whether the innermost open list or object has an item (as serde_json's pretty printer).
    has_value: bool,
}

impl PyFormatter {
    fn newline<W: ?Sized + std::io::Write>(&self, w: &mut W) -> std::io::Result<()> {
        if let Some(ind) = &self.indent {
            w.write_all(b"\n")?;
            for _ in 0..self.depth {
                w.write_all(ind)?;
            }
        }
        Ok(())
    }

    fn item<W: ?Sized + std::io::Write>(&self, w: &mut W, first: bool) -> std::io::Result<()> {
        if !first {
            w.write_all(if self.indent.is_some() { b"," } else { b", " })?;
        }
        self.newline(w)
    }

    fn open<W: ?Sized + std::io::Write>(&mut self, w: &mut W, b: &[u8]) -> std::io::Result<()> {
        self.depth += 1;
        self.has_value = false;
        w.write_all(b)
    }

    fn close<W: ?Sized + std::io::Write>(&mut self, w: &mut W, b: &[u8]) -> std::io::Result<()> {
        self.depth -= 1;
        if self.has_value {
            self.newline(w)?;
        }
        w.write_all(b)
    }
}

impl serde_json::ser::Formatter for PyFormatter {
    fn begin_array<W: ?Sized + std::io::Write>(&mut self, w: &mut W) -> std::io::Result<()> {
        self.open(w, b"[")
    }
    fn end_array<W: ?Sized + std::io::Write>(&mut self, w: &mut W) -> std::io::Result<()> {
        self.close(w, b"]")
    }
    fn begin_array_value<W: ?Sized + std::io::Write>(
        &mut self,
        w: &mut W,
        first: bool,
    ) -> std::io::Result<()> {
        self.item(w, first)
    }
    fn end_array_value<W: ?Sized + std::io::Write>(&mut self, _: &mut W) -> std::io::Result<()> {
        self.has_value = true;
        Ok(())
    }
    fn begin_object<W: ?Sized + std::io::Write>(&mut self, w: &mut W) -> std::io::Result<()> {
        self.open(w, b"{")
    }
    fn end_object<W: ?Sized + std::io::Write>(&mut self, w: &mut W) -> std::io::Result<()> {
        self.close(w, b"}")
    }
    fn begin_object_key<W: ?Sized + std::io::Write>(
        &mut self,
        w: &mut W,
        first: bool,
    ) -> std::io::Result<()> {
        self.item(w, first)
    }
    fn begin_object_value<W: ?Sized + std::io::Write>(&mut self, w: &mut W) -> std::io::Result<()> {
        w.write_all(b": ")
    }
    fn end_object_value<W: ?Sized + std::io::Write>(&mut self, _: &mut W) -> std::io::Result<()> {
        self.has_value = true;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn chatml_and_python_methods() {
        let t = ChatTemplate::new(CHATML).unwrap();
        let out = t.render_text(&[("user".into(), "hi".into())]).unwrap();
        assert_eq!(
            out,
            "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n"
        );
        // Qwen's templates call Python string methods and raise_exception.
        let q = ChatTemplate::new("{% if messages[0].content.startswith('x') %}{{ raise_exception('no x') }}{% endif %}{{ messages[0].content.split(' ')[1] | upper }}").unwrap();
        assert_eq!(
            q.render_text(&[("user".into(), "a b".into())]).unwrap(),
            "B"
        );
        assert!(
            q.render_text(&[("user".into(), "x y".into())])
                .unwrap_err()
                .to_string()
                .contains("no x")
        );
    }

    #[test]
    fn tojson_is_pythons() {
        let t = ChatTemplate::new("{{ tools[0] | tojson }}|{{ tools[1] | tojson(indent=2) }}|{{ tools[0] | tojson(sort_keys=true) }}")
            .unwrap();
        let tools = [
            json!({"name": "f", "b": [1, "<é>"], "a": {}}),
            json!({"k": [1, 2], "e": []}),
        ];
        let out = t
            .render(&ChatInput {
                messages: &[],
                tools: Some(&tools),
                kwargs: Map::new(),
            })
            .unwrap();
        assert_eq!(
            out,
            "{\"name\": \"f\", \"b\": [1, \"<é>\"], \"a\": {}}|{\n  \"k\": [\n    1,\n    2\n  ],\n  \"e\": []\n}|{\"a\": {}, \"b\": [1, \"<é>\"], \"name\": \"f\"}"
        );
    }

    #[test]
    fn a_template_that_never_ends_runs_out_of_fuel() {
        let t = ChatTemplate::new(
            "{% for a in range(100000) %}{% for b in range(100000) %}x{% endfor %}{% endfor %}",
        )
        .unwrap();
        assert!(t.render_text(&[]).is_err());
    }
}
