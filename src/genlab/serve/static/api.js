// Renders the OpenAPI schema as a plain page, so the API docs work offline (no CDN assets).
"use strict";

const element = (tag, text, className) => {
  const node = document.createElement(tag);
  if (text !== undefined) node.textContent = text;
  if (className) node.className = className;
  return node;
};

function resolve(schema, spec) {
  if (schema && schema.$ref) return resolve(spec.components.schemas[schema.$ref.split("/").pop()], spec);
  return schema || {};
}

function describeType(schema, spec) {
  const s = resolve(schema, spec);
  if (s.anyOf) return s.anyOf.map((option) => describeType(option, spec)).join(" | ");
  const limits = [];
  if (s.minimum !== undefined) limits.push(`≥ ${s.minimum}`);
  if (s.maximum !== undefined) limits.push(`≤ ${s.maximum}`);
  if (s.pattern) limits.push(s.pattern);
  if (s.format === "binary") return "file";
  return [s.type || "object", ...limits].join(" ");
}

function fieldTable(rows) {
  const table = element("table");
  const head = element("tr");
  for (const title of ["name", "in", "type", "default", "description"]) head.append(element("th", title));
  table.append(head);
  for (const row of rows) {
    const tr = element("tr");
    for (const cell of row) tr.append(element("td", cell));
    table.append(tr);
  }
  return table;
}

function endpoint(path, method, operation, spec) {
  const card = element("section", undefined, "card endpoint");
  const title = element("h2");
  title.append(element("span", method.toUpperCase(), `method ${method}`), element("code", path));
  card.append(title, element("p", operation.summary || ""));
  const rows = (operation.parameters || []).map((p) => [p.name, p.in, describeType(p.schema, spec), "", p.description || ""]);
  const content = operation.requestBody ? operation.requestBody.content : {};
  for (const [mediaType, body] of Object.entries(content)) {
    const schema = resolve(body.schema, spec);
    for (const [name, property] of Object.entries(schema.properties || {})) {
      const p = resolve(property, spec);
      const fallback = p.default === undefined ? ((schema.required || []).includes(name) ? "required" : "") : JSON.stringify(p.default);
      rows.push([name, mediaType, describeType(property, spec), fallback, p.description || ""]);
    }
  }
  if (rows.length) card.append(fieldTable(rows));
  const responses = Object.entries(operation.responses || {}).map(([code, r]) => `${code}: ${Object.keys(r.content || {}).join(", ") || r.description}`);
  card.append(element("p", `responses · ${responses.join(" · ")}`));
  return card;
}

fetch("/api/openapi.json").then((r) => r.json()).then((spec) => {
  const list = document.getElementById("endpoints");
  for (const [path, methods] of Object.entries(spec.paths)) {
    for (const [method, operation] of Object.entries(methods)) list.append(endpoint(path, method, operation, spec));
  }
});
