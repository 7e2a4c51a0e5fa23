"""ComfyUI workflows as the frontend saves them (UI format) → prompts as POST /prompt takes them (API format).

It follows the frontend's own conversion (graphToPrompt) for the features the shipped
workflows use: widget values map, in order, onto the node's widget inputs as /object_info
lists them; a seed's "control after generate" value is skipped; Note and MarkdownNote nodes
(frontend-only) are dropped; links pass through Reroute nodes; muted nodes are left out and
bypassed nodes hand their input of the same type on. Standard library only.
"""

FRONTEND_ONLY = ("Note", "MarkdownNote")
REROUTE = "Reroute"
MUTED, BYPASSED = 2, 4
WIDGET_TYPES = ("INT", "FLOAT", "STRING", "BOOLEAN", "COMBO")
CONTROL_AFTER_GENERATE = ("fixed", "increment", "decrement", "randomize")


class WorkflowError(ValueError):
    pass


def node_label(node: dict) -> str:
    title = node.get("title")
    return f"node {node['id']} ({node['type']}{', ' + repr(title) if title else ''})"


def input_spec(node_def: dict, name: str):
    """(type, options) of one input of a node definition from /object_info."""
    for section in ("required", "optional"):
        spec = node_def["input"].get(section, {}).get(name)
        if spec is not None:
            return spec[0], (spec[1] if len(spec) > 1 else {})
    raise KeyError(name)


def combo_options(type_, options: dict) -> list:
    """The choices of a combo input: V1 nodes list them as the type, V3 nodes under "options"."""
    return list(type_) if isinstance(type_, list) else list(options.get("options", []))


def is_widget(type_, options: dict) -> bool:
    return (isinstance(type_, list) or type_ in WIDGET_TYPES) and not options.get("forceInput", False)


def widget_inputs(node_def: dict) -> list:
    """The node's widget inputs in the order the frontend creates their widgets: [(name, type, options)]."""
    order = node_def.get("input_order") or {s: list(node_def["input"].get(s, {})) for s in ("required", "optional")}
    widgets = []
    for section in ("required", "optional"):
        for name in order.get(section, []):
            type_, options = input_spec(node_def, name)
            if is_widget(type_, options):
                widgets.append((name, type_, options))
    return widgets


def widget_values(node: dict, node_def: dict) -> dict:
    """{input name: value} of a UI-format node's widgets_values, plus "<name>.control_after_generate"."""
    values = node.get("widgets_values") or []
    if isinstance(values, dict):
        return dict(values)
    named, i = {}, 0
    for name, type_, options in widget_inputs(node_def):
        if i >= len(values):
            raise WorkflowError(f"{node_label(node)}: widgets_values has no value for '{name}' ({len(values)} values)")
        named[name] = values[i]
        i += 1
        if options.get("control_after_generate"):
            if i >= len(values):
                raise WorkflowError(f"{node_label(node)}: widgets_values lacks the control-after-generate value of '{name}'")
            named[f"{name}.control_after_generate"] = values[i]
            i += 1
    if i != len(values):
        raise WorkflowError(
            f"{node_label(node)}: widgets_values has {len(values)} values, the node's widgets take {i}: "
            f"{values!r}. Was it saved with another version of the node?"
        )
    return named


def to_api_prompt(workflow: dict, object_info: dict) -> dict:
    """The API-format prompt of a UI-format workflow, for a server whose /object_info is given."""
    if workflow.get("definitions", {}) and workflow["definitions"].get("subgraphs"):
        raise WorkflowError("workflows with subgraphs are not supported; convert the subgraphs to nodes first")
    nodes = {node["id"]: node for node in workflow["nodes"]}
    links = {link[0]: link for link in workflow.get("links", [])}

    def source(link_id, seen=()):
        """[origin id, output slot] a link really comes from, or None where nothing feeds it."""
        if link_id in seen:
            raise WorkflowError(f"link {link_id} is part of a cycle through bypassed or reroute nodes")
        _, origin_id, slot, *_ = links[link_id]
        origin = nodes[origin_id]
        if origin["type"] == REROUTE or origin.get("mode", 0) == BYPASSED:
            inputs = origin.get("inputs", [])
            out_type = origin["outputs"][slot]["type"] if origin["type"] != REROUTE else None
            same_slot = [inputs[slot]] if slot < len(inputs) and inputs[slot]["type"] == out_type else []
            for slot_in in (inputs if out_type is None else same_slot + [i for i in inputs if i["type"] == out_type]):
                if slot_in.get("link") is not None:
                    return source(slot_in["link"], seen + (link_id,))
            return None
        if origin.get("mode", 0) == MUTED or origin["type"] in FRONTEND_ONLY:
            return None
        return [str(origin_id), slot]

    prompt = {}
    for node in workflow["nodes"]:
        if node["type"] in FRONTEND_ONLY or node["type"] == REROUTE or node.get("mode", 0) in (MUTED, BYPASSED):
            continue
        node_def = object_info.get(node["type"])
        if node_def is None:
            raise WorkflowError(f"{node_label(node)}: this ComfyUI has no node '{node['type']}'; install the pack that provides it")
        inputs = {k: v for k, v in widget_values(node, node_def).items() if not k.endswith(".control_after_generate")}
        for slot in node.get("inputs", []):
            if slot.get("link") is not None:
                fed_by = source(slot["link"])
                if fed_by is not None:
                    inputs[slot["name"]] = fed_by
        prompt[str(node["id"])] = {
            "class_type": node["type"],
            "inputs": inputs,
            "_meta": {"title": node.get("title") or node_def.get("display_name") or node["type"]},
        }
    return prompt
