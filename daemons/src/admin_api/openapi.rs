//! The API's OpenAPI 3.0 description, served at `/api/openapi.json`.
//!
//! Written by hand next to the router it describes; a unit test checks
//! that every path the router answers is described and the other way
//! round.

use serde_json::{Value, json};

fn error_response(description: &str) -> Value {
    json!({
        "description": description,
        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}
    })
}

fn json_response(description: &str, schema: &Value) -> Value {
    json!({
        "description": description,
        "content": {"application/json": {"schema": schema}}
    })
}

fn reference(name: &str) -> Value {
    json!({"$ref": format!("#/components/schemas/{name}")})
}

fn body(name: &str) -> Value {
    json!({
        "required": true,
        "content": {"application/json": {"schema": reference(name)}}
    })
}

fn id_param(name: &str, what: &str) -> Value {
    json!({
        "name": name, "in": "path", "required": true,
        "description": what,
        "schema": {"type": "integer", "minimum": 1, "format": "int32"}
    })
}

/// Every operation answers these besides its own.
fn with_errors(mut responses: Value, extra: &[(&str, &str)]) -> Value {
    if let Some(map) = responses.as_object_mut() {
        map.insert(
            "401".into(),
            error_response("missing or wrong bearer token"),
        );
        map.insert("403".into(), error_response("a cross-origin request"));
        for (code, description) in extra {
            map.insert((*code).into(), error_response(description));
        }
    }
    responses
}

/// The description, as a JSON value.
#[must_use]
#[allow(clippy::too_many_lines)]
pub fn openapi() -> Value {
    let user = reference("User");
    let group = reference("Group");
    let dept = reference("Department");
    let bad_body: &[(&str, &str)] = &[
        ("400", "malformed JSON or an unknown field"),
        ("413", "body over 128 KiB"),
        ("415", "not application/json"),
        ("422", "a field out of bounds"),
    ];
    let mut user_errors = bad_body.to_vec();
    user_errors.push(("404", "no such user"));
    json!({
        "openapi": "3.0.3",
        "info": {
            "title": "teamtalk-rs admin API",
            "version": env!("CARGO_PKG_VERSION"),
            "description": "Users, departments, groups and online sessions of a TeamTalk \
                system. Changes take effect at once: disabled and deleted users are \
                kicked, changed passwords refuse the old one at once, group changes are \
                announced to members online. Served on the admin port (teamtalk up: \
                127.0.0.1:8090)."
        },
        "servers": [{"url": "/"}],
        "security": [{"bearer": []}],
        "paths": {
            "/api/users": {
                "get": {
                    "summary": "List users, in pages, by id",
                    "parameters": [
                        {"name": "offset", "in": "query", "schema": {"type": "integer", "minimum": 0, "default": 0}},
                        {"name": "limit", "in": "query", "schema": {"type": "integer", "minimum": 1, "maximum": 1000, "default": 100}},
                        {"name": "q", "in": "query", "description": "part of the name or nick, any case", "schema": {"type": "string"}},
                        {"name": "name", "in": "query", "description": "exact login name", "schema": {"type": "string"}},
                        {"name": "dept_id", "in": "query", "schema": {"type": "integer"}}
                    ],
                    "responses": with_errors(json!({"200": json_response("a page", &reference("UserPage"))}), &[("400", "a parameter that is not a number")])
                },
                "post": {
                    "summary": "Create a user",
                    "requestBody": body("UserCreate"),
                    "responses": with_errors(json!({"201": json_response("created", &user)}), &[bad_body, &[("404", "no such department"), ("409", "the name is taken")]].concat())
                }
            },
            "/api/users/{id}": {
                "parameters": [id_param("id", "user id")],
                "get": {"summary": "A user", "responses": with_errors(json!({"200": json_response("the user", &user)}), &[("404", "no such user")])},
                "patch": {
                    "summary": "Change nick, department, status (3 disables and kicks) or other profile fields",
                    "requestBody": body("UserUpdate"),
                    "responses": with_errors(json!({"200": json_response("the user as changed", &user)}), &user_errors)
                },
                "delete": {
                    "summary": "Delete a user: kicked, removed from groups (announced); their messages stay in others' history",
                    "responses": with_errors(json!({"204": {"description": "deleted"}}), &[("404", "no such user")])
                }
            },
            "/api/users/{id}/password": {
                "parameters": [id_param("id", "user id")],
                "put": {
                    "summary": "Set a user's password; logins with the old one are refused at once",
                    "requestBody": body("Password"),
                    "responses": with_errors(json!({"204": {"description": "set"}}), &user_errors)
                }
            },
            "/api/users/{id}/disable": {
                "parameters": [id_param("id", "user id")],
                "post": {"summary": "Disable a user (status 3): sessions kicked, logins refused", "responses": with_errors(json!({"200": json_response("the user", &user)}), &[("404", "no such user")])}
            },
            "/api/users/{id}/enable": {
                "parameters": [id_param("id", "user id")],
                "post": {"summary": "Enable a user again (status 0)", "responses": with_errors(json!({"200": json_response("the user", &user)}), &[("404", "no such user")])}
            },
            "/api/users/{id}/sessions": {
                "parameters": [id_param("id", "user id")],
                "get": {
                    "summary": "The user's online sessions on every msg_server",
                    "responses": with_errors(json!({"200": json_response("sessions", &json!({"type": "array", "items": reference("Session")}))}), &[("404", "no such user"), ("503", "msg_servers unavailable")])
                },
                "delete": {
                    "summary": "Kick every session of the user",
                    "responses": with_errors(json!({"200": json_response("how many were kicked", &json!({"type": "object", "properties": {"kicked": {"type": "integer"}}}))}), &[("404", "no such user"), ("503", "msg_servers unavailable")])
                }
            },
            "/api/departments": {
                "get": {"summary": "Live departments, by id", "responses": with_errors(json!({"200": json_response("departments", &json!({"type": "array", "items": dept}))}), &[])},
                "post": {
                    "summary": "Create a department",
                    "requestBody": body("DepartmentCreate"),
                    "responses": with_errors(json!({"201": json_response("created", &dept)}), &[bad_body, &[("404", "no such parent"), ("409", "the name is taken")]].concat())
                }
            },
            "/api/departments/{id}": {
                "parameters": [id_param("id", "department id")],
                "get": {"summary": "A department", "responses": with_errors(json!({"200": json_response("the department", &dept)}), &[("404", "no such department")])},
                "patch": {
                    "summary": "Rename a department",
                    "requestBody": body("DepartmentRename"),
                    "responses": with_errors(json!({"200": json_response("renamed", &dept)}), &[bad_body, &[("404", "no such department"), ("409", "the name is taken")]].concat())
                },
                "delete": {
                    "summary": "Delete an empty department",
                    "responses": with_errors(json!({"204": {"description": "deleted"}}), &[("404", "no such department"), ("409", "users or departments are in it")])
                }
            },
            "/api/groups": {
                "get": {"summary": "Every group with its members", "responses": with_errors(json!({"200": json_response("groups", &json!({"type": "array", "items": group}))}), &[])},
                "post": {
                    "summary": "Create a normal group (announced to its members online)",
                    "requestBody": body("GroupCreate"),
                    "responses": with_errors(json!({"201": json_response("created", &group)}), &[bad_body, &[("404", "a user that does not exist")]].concat())
                }
            },
            "/api/groups/{id}": {
                "parameters": [id_param("id", "group id")],
                "get": {"summary": "A group", "responses": with_errors(json!({"200": json_response("the group", &group)}), &[("404", "no such group")])},
                "delete": {"summary": "Delete a group (its members are told they were removed)", "responses": with_errors(json!({"204": {"description": "deleted"}}), &[("404", "no such group")])}
            },
            "/api/groups/{id}/members": {
                "parameters": [id_param("id", "group id")],
                "post": {
                    "summary": "Add members (announced)",
                    "requestBody": body("Members"),
                    "responses": with_errors(json!({"200": json_response("the group as changed", &group)}), &[bad_body, &[("404", "no such group or user")]].concat())
                }
            },
            "/api/groups/{id}/members/{user}": {
                "parameters": [id_param("id", "group id"), id_param("user", "user id")],
                "delete": {"summary": "Remove a member (announced)", "responses": with_errors(json!({"200": json_response("the group as changed", &group)}), &[("404", "no such group"), ("422", "the change is refused")])}
            },
            "/api/openapi.json": {
                "get": {"summary": "This description", "security": [], "responses": {"200": {"description": "OpenAPI 3.0"}}}
            }
        },
        "components": {
            "securitySchemes": {
                "bearer": {"type": "http", "scheme": "bearer", "description": "AdminToken= of the conf, or teamtalk up --admin-token-file; not needed on loopback without one"}
            },
            "schemas": {
                "Error": {
                    "type": "object", "required": ["status", "error", "message"],
                    "properties": {
                        "status": {"type": "integer"},
                        "error": {"type": "string", "description": "the status's reason phrase"},
                        "message": {"type": "string", "maxLength": 200}
                    }
                },
                "User": {
                    "type": "object",
                    "properties": {
                        "id": {"type": "integer"}, "name": {"type": "string"}, "nick": {"type": "string"},
                        "sex": {"type": "integer", "enum": [0, 1, 2]}, "dept_id": {"type": "integer"},
                        "avatar": {"type": "string"}, "email": {"type": "string"}, "phone": {"type": "string"},
                        "domain": {"type": "string"}, "status": {"type": "integer", "minimum": 0, "maximum": 4},
                        "disabled": {"type": "boolean"}, "sign_info": {"type": "string"},
                        "created": {"type": "integer"}, "updated": {"type": "integer"}
                    }
                },
                "UserPage": {
                    "type": "object",
                    "properties": {
                        "total": {"type": "integer"}, "offset": {"type": "integer"}, "limit": {"type": "integer"},
                        "users": {"type": "array", "items": reference("User")}
                    }
                },
                "UserCreate": {
                    "type": "object", "required": ["name", "password"], "additionalProperties": false,
                    "properties": {
                        "name": {"type": "string", "minLength": 1, "maxLength": 256, "description": "no spaces or control characters"},
                        "password": {"type": "string", "minLength": 1, "maxLength": 256},
                        "nick": {"type": "string", "maxLength": 32}, "dept_id": {"type": "integer"},
                        "sex": {"type": "integer", "enum": [0, 1, 2]}, "email": {"type": "string", "maxLength": 128},
                        "phone": {"type": "string", "maxLength": 128}, "avatar": {"type": "string", "maxLength": 1024},
                        "domain": {"type": "string", "maxLength": 128}
                    }
                },
                "UserUpdate": {
                    "type": "object", "additionalProperties": false, "minProperties": 1,
                    "properties": {
                        "nick": {"type": "string", "maxLength": 32}, "dept_id": {"type": "integer"},
                        "status": {"type": "integer", "minimum": 0, "maximum": 4, "description": "3 disables (kicks)"},
                        "sex": {"type": "integer", "enum": [0, 1, 2]}, "email": {"type": "string", "maxLength": 128},
                        "phone": {"type": "string", "maxLength": 128}, "avatar": {"type": "string", "maxLength": 1024},
                        "domain": {"type": "string", "maxLength": 128}, "sign_info": {"type": "string", "maxLength": 1024}
                    }
                },
                "Password": {
                    "type": "object", "required": ["password"], "additionalProperties": false,
                    "properties": {"password": {"type": "string", "minLength": 1, "maxLength": 256}}
                },
                "Session": {
                    "type": "object",
                    "properties": {
                        "server": {"type": "string", "description": "the msg_server's client address"},
                        "client_type": {"type": "integer"},
                        "client": {"type": "string", "enum": ["windows", "mac", "ios", "android", "other"]},
                        "addr": {"type": "string", "nullable": true},
                        "status": {"type": "integer"}
                    }
                },
                "Department": {
                    "type": "object",
                    "properties": {
                        "id": {"type": "integer"}, "name": {"type": "string"}, "parent_id": {"type": "integer"},
                        "priority": {"type": "integer"}, "updated": {"type": "integer"}
                    }
                },
                "DepartmentCreate": {
                    "type": "object", "required": ["name"], "additionalProperties": false,
                    "properties": {
                        "name": {"type": "string", "maxLength": 64}, "parent_id": {"type": "integer"},
                        "priority": {"type": "integer"}
                    }
                },
                "DepartmentRename": {
                    "type": "object", "required": ["name"], "additionalProperties": false,
                    "properties": {"name": {"type": "string", "maxLength": 64}}
                },
                "Group": {
                    "type": "object",
                    "properties": {
                        "id": {"type": "integer"}, "name": {"type": "string"}, "avatar": {"type": "string"},
                        "creator": {"type": "integer"}, "type": {"type": "string", "enum": ["normal", "tmp"]},
                        "version": {"type": "integer"}, "members": {"type": "array", "items": {"type": "integer"}},
                        "created": {"type": "integer"}
                    }
                },
                "GroupCreate": {
                    "type": "object", "required": ["name", "creator"], "additionalProperties": false,
                    "properties": {
                        "name": {"type": "string", "maxLength": 256}, "creator": {"type": "integer"},
                        "members": {"type": "array", "items": {"type": "integer"}, "maxItems": 10000},
                        "avatar": {"type": "string", "maxLength": 1024}
                    }
                },
                "Members": {
                    "type": "object", "required": ["users"], "additionalProperties": false,
                    "properties": {"users": {"type": "array", "items": {"type": "integer"}, "minItems": 1, "maxItems": 10000}}
                }
            }
        }
    })
}
