//! The OpenAPI 3 document served at /v1/openapi.json.

use serde_json::{json, Value};

pub fn document(c: &crate::ServerConfig) -> Value {
    let (max_code, max_batch) = (c.max_code_bytes, c.max_batch);
    let error = json!({"$ref": "#/components/schemas/Error"});
    let err =
        |d: &str| json!({"description": d, "content": {"application/json": {"schema": error}}});
    json!({
        "openapi": "3.0.3",
        "info": {
            "title": "zeroboot",
            "version": env!("CARGO_PKG_VERSION"),
            "description": "Hardware-isolated code sandboxes: every execution is a fresh KVM VM forked from a template."
        },
        "servers": [{"url": "/"}],
        "security": [{"bearer": []}],
        "paths": {
            "/v1/exec": {"post": {
                "summary": "Run code in a fresh sandbox",
                "operationId": "exec",
                "requestBody": {"required": true, "content": {"application/json": {"schema": {"$ref": "#/components/schemas/ExecRequest"}}}},
                "responses": {
                    "200": {"description": "The code ran (any exit code, or a timeout)", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/ExecResponse"}}}},
                    "400": err("Malformed JSON or an invalid field"),
                    "401": err("Missing or invalid API key"),
                    "413": err("Request or code too large"),
                    "422": err("A required field is missing or has the wrong type"),
                    "429": err("Rate limit exceeded (see Retry-After)"),
                    "503": err("Too many executions queued")
                }
            }},
            "/v1/exec/batch": {"post": {
                "summary": "Run several snippets, each in its own sandbox, in parallel",
                "operationId": "execBatch",
                "requestBody": {"required": true, "content": {"application/json": {"schema": {"$ref": "#/components/schemas/BatchRequest"}}}},
                "responses": {
                    "200": {"description": "Results in request order", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/BatchResponse"}}}},
                    "400": err("Malformed JSON or an invalid field"),
                    "401": err("Missing or invalid API key"),
                    "413": err("Request, code or batch too large"),
                    "422": err("A required field is missing or has the wrong type"),
                    "429": err("Rate limit exceeded (see Retry-After)"),
                    "503": err("Too many executions queued")
                }
            }},
            "/v1/sandboxes/{id}/exec": {"post": {
                "summary": "Run code in a live sandbox (created with E2B's POST /sandboxes); it keeps what earlier runs left",
                "operationId": "sandboxExec",
                "parameters": [{"name": "id", "in": "path", "required": true, "schema": {"type": "string"}}],
                "requestBody": {"required": true, "content": {"application/json": {"schema": {"$ref": "#/components/schemas/SandboxExecRequest"}}}},
                "responses": {
                    "200": {"description": "The code ran (any exit code, or a timeout, which ends the sandbox)", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/ExecResponse"}}}},
                    "400": err("Malformed JSON or an invalid field"),
                    "401": err("Missing or invalid API key"),
                    "404": err("No such sandbox (for this key)"),
                    "409": err("The sandbox is paused"),
                    "410": err("The sandbox has ended (its code timed out or exited, it was killed, or its time to live ran out)"),
                    "413": err("Request or code too large"),
                    "422": err("A required field is missing or has the wrong type"),
                    "429": err("Rate limit exceeded (see Retry-After)")
                }
            }},
            "/v1/health": {"get": {
                "summary": "Server and template status",
                "operationId": "health",
                "security": [],
                "responses": {"200": {"description": "Status", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Health"}}}}}
            }},
            "/v1/health/live": {"get": {
                "summary": "Liveness: 200 while the process serves (draining too)",
                "operationId": "healthLive",
                "security": [],
                "responses": {"200": {"description": "Alive"}}
            }},
            "/v1/health/ready": {"get": {
                "summary": "Readiness: 200 when it takes new sandboxes, 503 while it drains (docs/fleet.md)",
                "operationId": "healthReady",
                "security": [],
                "responses": {"200": {"description": "Takes new sandboxes"}, "503": {"description": "Draining"}}
            }},
            "/v1/metrics": {"get": {
                "summary": "Prometheus metrics",
                "operationId": "metrics",
                "security": [],
                "responses": {"200": {"description": "Metrics in the text exposition format", "content": {"text/plain": {"schema": {"type": "string"}}}}}
            }},
            "/v1/openapi.json": {"get": {
                "summary": "This document",
                "operationId": "openapi",
                "security": [],
                "responses": {"200": {"description": "OpenAPI document", "content": {"application/json": {"schema": {"type": "object"}}}}}
            }}
        },
        "components": {
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
            "schemas": {
                "ExecRequest": {
                    "type": "object",
                    "required": ["code"],
                    "properties": {
                        "code": {"type": "string", "maxLength": max_code, "description": "The code to run"},
                        "language": {"type": "string", "enum": ["python", "node", "javascript"], "default": "python"},
                        "timeout_seconds": {"type": "number", "exclusiveMinimum": true, "minimum": 0, "maximum": 300, "default": 30},
                        "memory_mb": {"type": "integer", "minimum": 16, "maximum": c.max_memory_mb, "description": "Memory limit; past it allocations fail"},
                        "disk_mb": {"type": "integer", "minimum": 0, "maximum": c.max_disk_mb, "description": "Bytes the writable file system may hold"},
                        "max_open_files": {"type": "integer", "minimum": 16, "maximum": c.max_open_files, "description": "Most open descriptors per process"},
                        "max_output_bytes": {"type": "integer", "minimum": 0, "maximum": c.max_output_bytes, "description": "Most bytes of stdout and of stderr kept (each)"},
                        "allow_internet_access": {"type": "boolean", "default": true, "description": "Egress allowed unless denyOut covers it (only when the server runs with --network policy; docs/network.md)"},
                        "network": {"type": "object", "description": "E2B's egress rules", "properties": {
                            "allowOut": {"type": "array", "items": {"type": "string"}, "description": "IP addresses, CIDR blocks and domain names allowed (wins over denyOut)"},
                            "denyOut": {"type": "array", "items": {"type": "string"}, "description": "IP addresses and CIDR blocks denied"}
                        }},
                        "stream": {"type": "boolean", "default": false, "description": "Answer as the code writes, in newline-delimited JSON (application/x-ndjson): {\"type\": \"stdout\"|\"stderr\", \"data\"} events, then {\"type\": \"result\"} with the ExecResponse fields (or {\"type\": \"error\", \"error\"}). Ignored in batches."},
                        "results": {"type": "boolean", "default": false, "description": "Run the code once as a notebook cell on the code-interpreter template (language python, javascript or bash) and answer with its rich results, exception and execution_count as well; not with stream"}
                    }
                },
                "ExecResponse": {
                    "type": "object",
                    "required": ["id", "output", "stdout", "stderr", "exit_code", "duration_ms", "fork_time_ms", "exec_time_ms", "total_time_ms"],
                    "properties": {
                        "id": {"type": "string"},
                        "output": {"type": "string", "description": "The same as stdout"},
                        "stdout": {"type": "string"},
                        "stderr": {"type": "string"},
                        "exit_code": {"type": "integer"},
                        "timed_out": {"type": "boolean"},
                        "out_of_memory": {"type": "boolean", "description": "An allocation failed for the memory limit, or the code was killed for it"},
                        "disk_full": {"type": "boolean", "description": "A write failed for the disk limit"},
                        "fds_exhausted": {"type": "boolean", "description": "A descriptor was refused for the open-files limit"},
                        "truncated": {"type": "boolean"},
                        "duration_ms": {"type": "number"},
                        "fork_time_ms": {"type": "number"},
                        "exec_time_ms": {"type": "number"},
                        "total_time_ms": {"type": "number"},
                        "network": {"type": "object", "description": "Network use: enabled (the server's network is on), connections, bytes_in, bytes_out, denied, dns_queries, throttled (sends/receives slowed by the bandwidth cap), udp_dropped (datagrams dropped by the UDP cap); note when off"},
                        "error": {"type": "string"},
                        "results": {"type": "array", "items": {"type": "object"}, "description": "With results: true: E2B's result objects (text, html, png, ..., is_main_result)"},
                        "exception": {"type": "object", "nullable": true, "description": "With results: true: the cell's error {name, value, traceback}, or null"},
                        "execution_count": {"type": "integer", "nullable": true}
                    }
                },
                "SandboxExecRequest": {
                    "type": "object",
                    "required": ["code"],
                    "properties": {
                        "code": {"type": "string", "maxLength": max_code, "description": "The code to run"},
                        "timeout_seconds": {"type": "number", "exclusiveMinimum": true, "minimum": 0, "maximum": 300, "default": 30},
                        "max_output_bytes": {"type": "integer", "minimum": 0, "maximum": c.max_output_bytes, "description": "Most bytes of stdout and of stderr kept (each)"}
                    }
                },
                "BatchRequest": {
                    "type": "object",
                    "required": ["executions"],
                    "properties": {"executions": {"type": "array", "maxItems": max_batch, "items": {"$ref": "#/components/schemas/ExecRequest"}}}
                },
                "BatchResponse": {
                    "type": "object",
                    "required": ["results"],
                    "properties": {"results": {"type": "array", "items": {"$ref": "#/components/schemas/ExecResponse"}}}
                },
                "Health": {
                    "type": "object",
                    "required": ["status", "templates"],
                    "properties": {
                        "status": {"type": "string"},
                        "templates": {"type": "object", "additionalProperties": {
                            "type": "object",
                            "properties": {"ready": {"type": "boolean"}, "memory_mb": {"type": "number"}}
                        }}
                    }
                },
                "Error": {"type": "object", "required": ["error"], "properties": {"error": {"type": "string"}}}
            }
        }
    })
}
