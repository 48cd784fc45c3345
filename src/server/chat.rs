//! Chat templates: the model's Jinja template from tokenizer_config.json, rendered with
//! minijinja (with Python string methods), or ChatML when the model has none.

use std::path::Path;

use minijinja::{Environment, Error as JinjaError, ErrorKind, context};
use serde_json::Value;

use crate::error::{Error, Result};

/// ChatML, the format of Qwen's templates (used by the demo model).
pub const CHATML: &str = "{% for message in messages %}<|im_start|>{{ message.role }}\n{{ message.content }}<|im_end|>\n{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}";

/// A compiled chat template.
pub struct ChatTemplate {
    env: Environment<'static>,
}

impl ChatTemplate {
    /// Compiles `source`.
    pub fn new(source: &str) -> Result<Self> {
        let mut env = Environment::new();
        minijinja_contrib::add_to_environment(&mut env);
        env.set_unknown_method_callback(minijinja_contrib::pycompat::unknown_method_callback);
        env.add_function(
            "raise_exception",
            |msg: String| -> std::result::Result<String, JinjaError> {
                Err(JinjaError::new(ErrorKind::InvalidOperation, msg))
            },
        );
        env.add_template_owned("chat", source.to_string())
            .map_err(|e| Error::Tokenizer(format!("chat template does not compile: {e}")))?;
        Ok(ChatTemplate { env })
    }

    /// The template of a model directory (tokenizer_config.json's chat_template), or ChatML.
    pub fn from_model_dir(dir: Option<&Path>) -> Result<Self> {
        let Some(dir) = dir else {
            return Self::new(CHATML);
        };
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

    /// Renders `(role, content)` messages with the assistant's turn opened.
    pub fn render(&self, messages: &[(String, String)]) -> Result<String> {
        let msgs: Vec<Value> = messages
            .iter()
            .map(|(r, c)| serde_json::json!({"role": r, "content": c}))
            .collect();
        let tmpl = self
            .env
            .get_template("chat")
            .map_err(|e| Error::Tokenizer(e.to_string()))?;
        tmpl.render(context! { messages => minijinja::Value::from(minijinja::value::Serde(&msgs)), add_generation_prompt => true, enable_thinking => false })
            .map_err(|e| Error::InvalidRequest(format!("chat template failed: {e}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chatml_and_python_methods() {
        let t = ChatTemplate::new(CHATML).unwrap();
        let out = t.render(&[("user".into(), "hi".into())]).unwrap();
        assert_eq!(
            out,
            "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n"
        );
        // Qwen's templates call Python string methods and raise_exception.
        let q = ChatTemplate::new("{% if messages[0].content.startswith('x') %}{{ raise_exception('no x') }}{% endif %}{{ messages[0].content.split(' ')[1] | upper }}").unwrap();
        assert_eq!(q.render(&[("user".into(), "a b".into())]).unwrap(), "B");
        assert!(
            q.render(&[("user".into(), "x y".into())])
                .unwrap_err()
                .to_string()
                .contains("no x")
        );
    }
}
