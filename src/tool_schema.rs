//! Tool definitions for model APIs: a caller's tools (from `ListTools`) as JSON-schema
//! function definitions, in the OpenAI and Anthropic formats and as MCP input schemas.
//!
//! The schema is built only from what `ListTools` says, so it shows a caller exactly the tools
//! it may call. A tool's input is `args` (the arguments after its program, an array of strings
//! passed as given) or `command` (one line starting with the program's word, split without a
//! shell), plus optional `stdin`; a shell-like tool takes `command` only, since its first word
//! picks the program. The argument rules, in words, go into the descriptions, because JSON
//! schema cannot say "no `-exec`". The daemon checks them again on every call: the schema
//! helps a model ask well, it is not what enforces anything.

use serde_json::{Value, json};

use crate::api::pb;

/// A model-API format for tool definitions.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    /// `{"type": "function", "function": {"name", "description", "parameters"}}`.
    OpenAi,
    /// `{"name", "description", "input_schema"}`.
    Anthropic,
}

/// The JSON schema of a tool's input object (as MCP's `inputSchema` and the formats use it).
pub fn input_schema(tool: &pb::ToolInfo) -> serde_json::Map<String, Value> {
    let rules = if tool.argument_rules.is_empty() {
        "No rules on the arguments.".to_owned()
    } else {
        tool.argument_rules.join(" ")
    };
    let mut properties = serde_json::Map::new();
    let mut required = Vec::new();
    if tool.programs.is_empty() {
        properties.insert(
            "args".to_owned(),
            json!({
                "type": "array",
                "items": {"type": "string"},
                "description": format!(
                    "The arguments after `{}`, each passed to it exactly as given (no shell: quotes, `;`, `|` and `$()` are plain characters). {rules}",
                    tool.program
                ),
            }),
        );
        properties.insert(
            "command".to_owned(),
            json!({
                "type": "string",
                "description": format!(
                    "Instead of args: one command line starting with `{}`, split into words with POSIX quoting and never given to a shell.",
                    tool.program
                ),
            }),
        );
    } else {
        properties.insert(
            "command".to_owned(),
            json!({
                "type": "string",
                "description": format!(
                    "One command line whose first word is one of: {}. Split into words with POSIX quoting and never given to a shell (no pipes, redirections or `;`). {rules}",
                    tool.programs.join(", ")
                ),
            }),
        );
        required.push(json!("command"));
    }
    properties.insert(
        "stdin".to_owned(),
        json!({"type": "string", "description": "Text for the program's standard input (optional)."}),
    );
    let mut schema = serde_json::Map::new();
    schema.insert("type".to_owned(), json!("object"));
    schema.insert("properties".to_owned(), Value::Object(properties));
    if !required.is_empty() {
        schema.insert("required".to_owned(), Value::Array(required));
    }
    schema.insert("additionalProperties".to_owned(), json!(false));
    schema
}

/// The tool's description for a model: the policy's, with its limits.
pub fn description(tool: &pb::ToolInfo) -> String {
    let mut text = tool.description.clone();
    if let Some(timeout) = &tool.timeout {
        text.push_str(&format!(
            " (Time limit {} s; output capped at {} bytes.)",
            timeout.seconds, tool.max_output_bytes
        ));
    }
    text.trim().to_owned()
}

/// A name model APIs accept (`[A-Za-z0-9_-]{1,64}`): toolgate's names may also hold `.`.
pub fn api_name(name: &str) -> String {
    name.replace('.', "_")
}

/// One tool's definition in `format`.
pub fn definition(tool: &pb::ToolInfo, format: Format) -> Value {
    let schema = Value::Object(input_schema(tool));
    let name = api_name(&tool.name);
    match format {
        Format::OpenAi => json!({
            "type": "function",
            "function": {"name": name, "description": description(tool), "parameters": schema},
        }),
        Format::Anthropic => json!({
            "name": name, "description": description(tool), "input_schema": schema,
        }),
    }
}

/// Every tool's definition in `format`, as one JSON array.
pub fn definitions(tools: &[pb::ToolInfo], format: Format) -> Value {
    Value::Array(tools.iter().map(|t| definition(t, format)).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tool(programs: &[&str]) -> pb::ToolInfo {
        pb::ToolInfo {
            name: "files.cat".into(),
            description: "Print files.".into(),
            program: if programs.is_empty() {
                "cat".into()
            } else {
                String::new()
            },
            programs: programs.iter().map(|p| p.to_string()).collect(),
            argument_rules: vec!["Only these flags: -n.".into()],
            timeout: Some(prost_types::Duration {
                seconds: 10,
                nanos: 0,
            }),
            max_output_bytes: 4096,
            env_allowed: vec![],
        }
    }

    #[test]
    fn single_program_tools_take_args_or_a_command() {
        let d = definition(&tool(&[]), Format::OpenAi);
        assert_eq!(d["function"]["name"], "files_cat");
        let props = &d["function"]["parameters"]["properties"];
        assert_eq!(props["args"]["type"], "array");
        assert!(
            props["args"]["description"]
                .as_str()
                .unwrap()
                .contains("-n")
        );
        assert!(d["function"]["parameters"].get("required").is_none());
        assert!(
            d["function"]["description"]
                .as_str()
                .unwrap()
                .contains("10 s")
        );
    }

    #[test]
    fn shell_like_tools_take_a_command_only() {
        let d = definition(&tool(&["ls", "git"]), Format::Anthropic);
        let schema = &d["input_schema"];
        assert!(schema["properties"].get("args").is_none());
        assert_eq!(schema["required"], json!(["command"]));
        assert!(
            schema["properties"]["command"]["description"]
                .as_str()
                .unwrap()
                .contains("ls, git")
        );
    }
}
