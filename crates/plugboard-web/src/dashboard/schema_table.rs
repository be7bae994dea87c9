//! The config schema as a readable table: one row per field (nested ones
//! by their dotted path) with its type, default, constraints and
//! description, beside the link to the form. Built from the same bounded
//! field list as the form ([`super::form::fields`]), so a schema that refers
//! to itself cannot make it grow without bound. A secret's default and
//! constraints are not shown.

use maud::{Markup, html};

use super::form::{Field, FieldKind, all_fields, path_names};

/// The type column of a field: the schema's `type` when it gives one, else
/// what the form makes of it.
fn type_of(f: &Field) -> String {
    if let Some(t) = &f.type_name {
        return t.clone();
    }
    let kind = match &f.kind {
        FieldKind::Secret(inner) => inner.as_ref(),
        k => k,
    };
    match kind {
        FieldKind::Enum(_) => "enum",
        FieldKind::Integer => "integer",
        FieldKind::Number => "number",
        FieldKind::Boolean => "boolean",
        FieldKind::Array(_) => "array",
        FieldKind::Object(_) => "object",
        FieldKind::Json => "any",
        _ => "string",
    }
    .to_owned()
}

/// The "Config schema" section of the plugin page.
pub fn section(id: &str, fields: &[Field]) -> Markup {
    let rows = all_fields(fields);
    html! {
        section.card.schema id="schema" {
            div.section-head {
                h2 { "Config schema" }
                a.button id="configure" href={ "/plugins/" (id) "/config" } { "Edit the config" }
            }
            @if rows.is_empty() {
                p.muted { "This plugin has no settings." }
            } @else {
                div.scroll {
                    table.schema-table id="schema-table" {
                        thead { tr { th { "Field" } th { "Type" } th { "Default" } th { "Constraints" } th { "Description" } } }
                        tbody {
                            @for f in rows {
                                tr data-field=(f.path) {
                                    td {
                                        code { (path_names(&f.path).join(".")) }
                                        @if f.required { span.req title="required" { " *" } }
                                        @if f.label != f.name { br; span.muted { (f.label) } }
                                    }
                                    td { (type_of(f)) @if f.is_secret() { " " span.badge.warn { "secret" } } }
                                    td {
                                        @if f.is_secret() { span.muted { "-" } }
                                        @else if let Some(d) = &f.default { code { (d.to_string()) } }
                                        @else { span.muted { "-" } }
                                    }
                                    td {
                                        @if f.is_secret() { span.muted { "-" } }
                                        @else {
                                            @for (i, c) in f.constraints.iter().enumerate() {
                                                @if i > 0 { br; }
                                                (c)
                                            }
                                        }
                                    }
                                    td { (f.help.as_deref().unwrap_or("")) }
                                }
                            }
                        }
                    }
                }
            }
        }
    }
}
