"""The shipped workflows in a real browser: headless Chromium on the frontend a real ComfyUI serves.

The window is 1600×900 with the frontend's default minimap on. Each workflow is fetched from
the route ComfyUI's template browser reads it from and loaded the way the template browser
loads it (app.loadGraphData with openSource 'template': frontend 1.27 restores the view saved
in the workflow, extra.ds; 1.49 fits the view to the nodes). It opens readable, as a template
and as a file: its zoom is at or above the zoom below which the frontend draws nodes without
text (read from the frontend: its canvas's threshold, from the setting
LiteGraph.Canvas.MinFontSizeForLOD), no node is under the minimap or outside the window, and
the note's text fits. Then: no missing-node dialog, no link-repair or validation message, only the missing-model notices for the files the test
server lacks on purpose (a dialog in frontend 1.27, an error overlay in 1.49), no two nodes
overlapping on the canvas, the Markdown note rendered, the graph as saved, the frontend's
own API conversion equal to ours, a screenshot (test-artifacts/browser/). Queued from the
UI's Run button, it produces its image; the side-by-side workflow with TACA bypassed gives
the baseline in both halves. Before queueing, the test swaps T5-XXL for CLIP-L in the live graph and
shrinks the run to 64×64 and two steps (see model_files.py); the screenshot shows the
workflow as shipped.

TACA_UPDATE_SCREENSHOTS=1 also writes the screenshots as the workflows' thumbnails
(workflows/<name>.jpg) and the README's docs/side_by_side.png, and the balance workflow's plot as
docs/attention_balance.png.
"""

import io
import json
import os
import shutil
import time

import numpy as np
import pytest
from PIL import Image

import model_files
from comfy_server import ARTIFACTS, BALANCE, PACK, PACK_FOLDER, SHIPPED, SIDE_BY_SIDE, TEST_SIZE, TEST_STEPS, WORKFLOWS, load_workflow
from workflow_api import FRONTEND_ONLY, to_api_prompt

CHROMIUM = os.environ.get("CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")
if CHROMIUM is None:
    pytest.skip("no Chromium: install Debian's chromium (apt-get install chromium) or set CHROMIUM", allow_module_level=True)
sync_api = pytest.importorskip(
    "playwright.sync_api", reason="no Playwright: pip install playwright (it drives the system Chromium, no browser download)"
)

UPDATE_SCREENSHOTS = os.environ.get("TACA_UPDATE_SCREENSHOTS") == "1"
SCREENSHOTS = ARTIFACTS / "browser"
VIEWPORT = {"width": 1600, "height": 900}  # a usual laptop window; 1920×1080 is easier
THUMBNAIL_MARGIN, THUMBNAIL_WIDTH = 16, 768  # pixels around the nodes in a thumbnail; its largest width

# As each frontend's template browser opens a template; 1.27 takes no openSource and restores
# extra.ds, 1.49 fits the view to the nodes for openSource 'template'.
LOAD_TEMPLATE_JS = """
async ([url, name]) => {
  const workflow = await (await fetch(url)).json();
  await window.app.loadGraphData(workflow, true, true, name, {openSource: 'template'});
}
"""
# As a dropped or opened file: the saved view, extra.ds, in both frontends.
LOAD_FILE_JS = """
async ([url, name]) => {
  const workflow = await (await fetch(url)).json();
  await window.app.loadGraphData(workflow, true, true, name);
}
"""
# The view a workflow opened at, and what the frontend itself says about reading it: the
# zoom below which its canvas draws nodes without text (LGraphCanvas._lowQualityZoomThreshold,
# min_font_size_for_lod / (NODE_TEXT_SIZE · √devicePixelRatio), from the setting
# LiteGraph.Canvas.MinFontSizeForLOD), the minimap, and every node's box in window pixels.
VIEW_JS = """
() => {
  const app = window.app, canvas = app.canvas, ds = canvas.ds;
  const store = app.extensionManager?.setting;
  const setting = id => store ? store.get(id) : app.ui.settings.getSettingValue(id);
  const rect = canvas.canvas.getBoundingClientRect();
  const visible = e => e.offsetParent !== null;
  const box = e => { const r = e.getBoundingClientRect(); return [r.x, r.y, r.width, r.height]; };
  return {
    scale: ds.scale,
    threshold: canvas._lowQualityZoomThreshold,
    min_font_size: canvas.min_font_size_for_lod,
    min_font_size_setting: setting('LiteGraph.Canvas.MinFontSizeForLOD'),
    text_size: LiteGraph.NODE_TEXT_SIZE,
    device_pixel_ratio: window.devicePixelRatio,
    minimap_setting: setting('Comfy.Minimap.Visible'),
    minimap: [...document.querySelectorAll('.minimap-canvas')].filter(visible).map(e => box(e.parentElement)),
    canvas: [rect.x, rect.y, rect.width, rect.height],
    // A Markdown note's widget and how many pixels of its text overflow the box that shows it.
    notes: [...document.querySelectorAll('.comfy-markdown')].filter(visible).map(e => ({
      text: e.innerText.slice(0, 60),
      overflow: Math.max(...[e, ...e.querySelectorAll('*')].filter(x => x.tagName !== 'TEXTAREA').map(x => x.scrollHeight - x.clientHeight)),
    })),
    nodes: app.graph.nodes.map(n => {
      const [x, y, w, h] = n.boundingRect;
      return {title: n.title, box: [rect.x + (x + ds.offset[0]) * ds.scale, rect.y + (y + ds.offset[1]) * ds.scale, w * ds.scale, h * ds.scale]};
    }),
  };
}
"""
# Frontend 1.27 names missing model files in a "Missing Models" dialog, 1.49 in an error overlay.
VISIBLE_MESSAGES_JS = """
() => {
  const visible = e => e.offsetParent !== null;
  return {
    dialogs: [...document.querySelectorAll('.p-dialog')].filter(visible).map(d => d.innerText),
    overlays: [...document.querySelectorAll('[data-testid="error-overlay"]')].filter(visible).map(d => d.innerText),
    toasts: [...document.querySelectorAll('.p-toast-message')].map(t => t.innerText),
  };
}
"""
DISMISS_OVERLAYS_JS = """
() => document.querySelectorAll('[data-testid="error-overlay-dismiss"]').forEach(b => b.click())
"""
# Frontend 1.49's error panel ("View details" on the overlay): its groups of errors, by kind.
ERROR_GROUPS_JS = """
() => [...document.querySelectorAll('[data-testid^="error-group-"]')]
  .filter(e => e.offsetParent !== null && /^error-group-[a-z-]+$/.test(e.getAttribute('data-testid')) && e.getAttribute('data-testid') !== 'error-group-display-message')
  .map(e => ({kind: e.getAttribute('data-testid'), text: e.innerText}))
"""
# Each node's box on the canvas, title bar included, as the frontend draws it.
NODE_BOXES_JS = """
() => window.app.graph.nodes.map(n => ({
  id: n.id, title: n.title, box: Array.from(n.boundingRect ?? n.getBounding()),
}))
"""
RENDERED_HEADINGS_JS = """
() => [...document.querySelectorAll('h1, h2, h3')].filter(e => e.offsetParent !== null).map(e => e.innerText.trim())
"""
CLEAR_ERRORS_JS = """
(ids) => { window.app.graph.nodes.filter(n => ids.includes(String(n.id))).forEach(n => { n.has_errors = false; }); window.app.graph.setDirtyCanvas(true, true); }
"""
# Ctrl+B on every node of a type: LiteGraph's bypass mode (4).
BYPASS_JS = """
(type) => { window.app.graph.nodes.filter(n => n.type === type).forEach(n => { n.mode = 4; }); window.app.graph.setDirtyCanvas(true, true); }
"""
QUEUE_BUTTON = 'button[data-testid="queue-button"], [data-testid="queue-button"] button'  # frontend 1.49, 1.27
GRAPH_STATE_JS = """
async () => {
  const app = window.app;
  const graph = app.graph.serialize();
  return {
    unregistered: app.graph.nodes.filter(n => !(n.type in LiteGraph.registered_node_types)).map(n => n.type),
    with_errors: app.graph.nodes.filter(n => n.has_errors).map(n => n.id),
    widgets: Object.fromEntries(graph.nodes.map(n => [n.id, n.widgets_values ?? []])),
    links: graph.links.map(l => [l.id ?? l[0], l.origin_id ?? l[1], l.origin_slot ?? l[2], l.target_id ?? l[3], l.target_slot ?? l[4]]),
    output: (await app.graphToPrompt()).output,
  };
}
"""
# The test's substitutions, made in the live graph as a user would: CLIP-L alone where T5-XXL
# is loaded, and a 64×64, two-step run.
PREPARE_TEST_RUN_JS = """
([loaders, substitute, size, steps]) => {
  const graph = window.app.graph;
  for (const old of graph.nodes.filter(n => loaders.includes(n.type))) {
    const node = LiteGraph.createNode(substitute[0]);
    node.pos = [...old.pos];
    graph.add(node);
    node.widgets.forEach((w, i) => { w.value = substitute[1][i]; });
    for (const linkId of [...(old.outputs[0].links ?? [])]) {
      const link = graph.links.get ? graph.links.get(linkId) : graph.links[linkId];
      node.connect(0, graph.getNodeById(link.target_id), link.target_slot);
    }
    graph.remove(old);
  }
  for (const node of graph.nodes) {
    for (const w of node.widgets ?? []) {
      if ((w.name === 'width' || w.name === 'height') && node.type.includes('Latent')) w.value = size;
      if (w.name === 'steps') w.value = steps;
    }
  }
  graph.setDirtyCanvas(true, true);
}
"""


@pytest.fixture(scope="module")
def page(server):
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    console = []
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        page = browser.new_page(viewport=VIEWPORT)
        page.on("console", lambda message: console.append(f"{message.type}: {message.text}"))
        page.goto(server.url)
        page.wait_for_function("window.app && window.app.graph && window.LiteGraph", timeout=60_000)
        page.wait_for_timeout(1500)
        page.console = console
        # What the frontend shows before any workflow opens: another pack's extension may raise a
        # toast at start-up (KJNodes' keybinding on frontend 1.27), which no workflow caused.
        page.startup_toasts = page.evaluate(VISIBLE_MESSAGES_JS)["toasts"]
        yield page
        browser.close()


def model_files_named(node: dict) -> list:
    return [m["name"] for m in node["properties"].get("models", [])]


def overlap(a, b) -> bool:
    """Whether two [x, y, width, height] boxes share any area."""
    return a[0] < b[0] + b[2] and b[0] < a[0] + a[2] and a[1] < b[1] + b[3] and b[1] < a[1] + a[3]


def history_ids(server) -> set:
    return set(server.client.get("/history"))


def wait_for_new_run(server, before: set, timeout: float = 300.0) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for prompt_id in history_ids(server) - before:
            entry = server.client.history(prompt_id)
            if entry and entry["status"].get("completed") is not None:
                return entry
        time.sleep(0.5)
    raise AssertionError(f"the run queued from the UI did not finish within {timeout:.0f} s")


def save_screenshot(page, name: str) -> bytes:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    png = page.screenshot(path=str(SCREENSHOTS / f"{name}.png"))
    if UPDATE_SCREENSHOTS:
        image = Image.open(io.BytesIO(png)).convert("RGB")
        # The thumbnail: the graph, without the frontend's menus and minimap around it.
        boxes = [node["box"] for node in page.evaluate(VIEW_JS)["nodes"]]
        left, top = (max(0, round(min(b[i] for b in boxes)) - THUMBNAIL_MARGIN) for i in (0, 1))
        right, bottom = (min(size, round(max(b[i] + b[i + 2] for b in boxes)) + THUMBNAIL_MARGIN) for i, size in zip((0, 1), image.size))
        thumbnail = image.crop((left, top, right, bottom))
        scale = min(1.0, THUMBNAIL_WIDTH / thumbnail.width)
        thumbnail = thumbnail.resize((round(thumbnail.width * scale), round(thumbnail.height * scale)), Image.LANCZOS)
        thumbnail.save(WORKFLOWS / f"{name}.jpg", quality=85, optimize=True)
        if name == SIDE_BY_SIDE:  # the README's picture
            (PACK / "docs").mkdir(exist_ok=True)
            image.save(PACK / "docs" / "side_by_side.png", optimize=True)
    return png


def open_workflow(page, server, name, how=LOAD_TEMPLATE_JS, label=None) -> dict:
    """Open a shipped workflow from the template route and close the missing-model notices; its view as it opened."""
    page.evaluate(how, [f"{server.url}/api/workflow_templates/{PACK_FOLDER}/{name}.json", label or name])
    page.wait_for_timeout(1500)
    view = page.evaluate(VIEW_JS)
    page.keyboard.press("Escape")
    page.evaluate(DISMISS_OVERLAYS_JS)
    page.wait_for_timeout(300)
    return view


@pytest.mark.parametrize("name", SHIPPED)
def test_workflow_opens_readable_at_1600x900_with_the_minimap_on(page, server, name):
    # From the template browser, and as a file dropped on the canvas (its own tab, so the
    # frontend does not hand back the template's open tab).
    for opened_as, how, label in (("template", LOAD_TEMPLATE_JS, name), ("file", LOAD_FILE_JS, f"{name} (dropped)")):
        view = open_workflow(page, server, name, how, label)
        page.screenshot(path=str(SCREENSHOTS / f"{name}-opened-as-{opened_as}.png"))
        where = f"{name} opened as a {opened_as} at {VIEWPORT['width']}×{VIEWPORT['height']}: {json.dumps({k: v for k, v in view.items() if k != 'nodes'})}"
        assert view["minimap_setting"] is True and len(view["minimap"]) == 1, f"the minimap is not on: {where}"
        threshold = view["threshold"]
        assert isinstance(threshold, (int, float)) and threshold > 0, f"no low-quality zoom threshold on the frontend's canvas: {where}"
        assert view["min_font_size"] == view["min_font_size_setting"], where  # the canvas follows the user's setting
        assert view["scale"] >= threshold, (
            f"zoom {view['scale']:.3f} is below the frontend's threshold {threshold:.3f}: nodes draw as boxes without text. {where}")
        # Every node in the window, none under the minimap.
        (minimap,) = view["minimap"]
        cx, cy, cw, ch = view["canvas"]
        for node in view["nodes"]:
            x, y, w, h = node["box"]
            assert cx - 0.5 <= x and cy - 0.5 <= y and x + w <= cx + cw + 0.5 and y + h <= cy + ch + 0.5, (
                f"{node['title']} {[round(v) for v in node['box']]} is not inside the canvas: {where}")
            assert not overlap(node["box"], minimap), f"the minimap covers {node['title']}: {where}"
        # The note shows its whole text: rendered (DOM widgets hide when zoomed out) and not cut off.
        assert len(view["notes"]) == 1, f"the note is not drawn (the frontend hides it when zoomed out): {where}"
        assert view["notes"][0]["overflow"] <= 1, f"the note's text does not fit its node: {where}"


@pytest.mark.parametrize("name", SHIPPED)
def test_workflow_loads_without_dialogs_and_runs_from_the_ui(page, server, name):
    workflow = load_workflow(name)
    assert name in server.client.get("/workflow_templates")[PACK_FOLDER]
    template_url = f"{server.url}/api/workflow_templates/{PACK_FOLDER}/{name}.json"
    page.evaluate(LOAD_TEMPLATE_JS, [template_url, name])
    page.wait_for_timeout(1500)

    messages = page.evaluate(VISIBLE_MESSAGES_JS)
    context = f"{messages}\nconsole: {page.console[-20:]}"
    assert not any("Missing" in d and "Node" in d for d in messages["dialogs"]), context
    toasts = [t for t in messages["toasts"] if t not in page.startup_toasts]  # the ones loading the workflow raised
    assert not any(word in t for t in toasts for word in ("Link", "link", "Validation", "rror")), context
    # The only notices: the files this test server lacks on purpose.
    not_built = sorted({name for node in workflow["nodes"] for name in model_files_named(node)} & set(model_files.NOT_BUILT))
    notices = list(messages["dialogs"])
    assert len(notices) <= 1 and all("Missing Models" in d for d in notices), context
    if messages["overlays"]:
        page.click('[data-testid="error-overlay-see-errors"]')
        page.wait_for_timeout(800)
        groups = page.evaluate(ERROR_GROUPS_JS)
        assert [g["kind"] for g in groups] == ["error-group-missing-model"], groups
        notices += [g["text"] for g in groups]
        page.click('button[aria-label="Toggle properties panel"]')
        page.mouse.move(*VIEWPORT.values())  # no tooltip in the screenshot
    assert bool(notices) == bool(not_built), context
    for file in not_built:
        assert any(file in notice for notice in notices), context
    page.keyboard.press("Escape")
    page.evaluate(DISMISS_OVERLAYS_JS)
    page.wait_for_timeout(500)
    remaining = page.evaluate(VISIBLE_MESSAGES_JS)
    assert not remaining["dialogs"] and not remaining["overlays"], remaining

    boxes = page.evaluate(NODE_BOXES_JS)
    overlapping = [(a["title"], b["title"]) for i, a in enumerate(boxes) for b in boxes[i + 1:] if overlap(a["box"], b["box"])]
    assert not overlapping, f"nodes that overlap on the canvas: {overlapping}"
    (note,) = [node["widgets_values"][0] for node in workflow["nodes"] if node["type"] == "MarkdownNote"]
    assert note.splitlines()[0].lstrip("# ") in page.evaluate(RENDERED_HEADINGS_JS)  # the Markdown is rendered

    state = page.evaluate(GRAPH_STATE_JS)
    # Frontend 1.49 also flags the loader of a missing file as a node with errors.
    lacking = {str(node["id"]) for node in workflow["nodes"] if set(model_files_named(node)) & set(model_files.NOT_BUILT)}
    assert state["unregistered"] == [] and set(map(str, state["with_errors"])) <= lacking, state
    assert sorted(state["links"]) == sorted(link[:5] for link in workflow["links"])
    for node in workflow["nodes"]:  # loading kept every value, even a file this server lacks
        assert state["widgets"][str(node["id"])] == node.get("widgets_values", []), node["id"]
    ours = to_api_prompt(workflow, server.object_info)
    theirs = {k: {"class_type": v["class_type"], "inputs": v["inputs"]} for k, v in state["output"].items()}
    assert theirs == {k: {"class_type": v["class_type"], "inputs": v["inputs"]} for k, v in ours.items()}
    assert len(ours) == len([n for n in workflow["nodes"] if n["type"] not in FRONTEND_ONLY])

    # The screenshot shows the workflow as a user who has every file sees it: no error outline
    # on the loaders of the files this test server lacks on purpose.
    page.evaluate(CLEAR_ERRORS_JS, sorted(lacking))
    save_screenshot(page, name)
    if (WORKFLOWS / f"{name}.jpg").is_file():
        thumbnail = server.client.get_bytes(f"/api/workflow_templates/{PACK_FOLDER}/{name}.jpg")
        assert Image.open(io.BytesIO(thumbnail)).format == "JPEG"

    image = run_from_the_ui(page, server)
    assert image.shape[0] == TEST_SIZE and image.shape[1] >= TEST_SIZE
    page.screenshot(path=str(SCREENSHOTS / f"{name}-after-run.png"))
    if UPDATE_SCREENSHOTS and name == BALANCE:  # the README's picture: the plot of this run, on the test's tiny model
        entry = list(server.client.get("/history").values())[-1]
        prompt = entry["prompt"][2]
        (saver,) = [i for i, node in prompt.items() if node["class_type"] == "SaveImage"
                    and prompt[node["inputs"]["images"][0]]["class_type"] == "TACABalancePlot"]
        (png,) = server.files(entry, saver)
        Image.open(io.BytesIO(png)).convert("RGB").save(PACK / "docs" / "attention_balance.png", optimize=True)


def test_side_by_side_with_taca_bypassed_gives_the_baseline_twice(page, server):
    # Ctrl+B on the TACA node: its LoRA loader, 'with TACA', then stays off too, so the
    # right half is the model as it is, like the left one.
    page.evaluate(LOAD_TEMPLATE_JS, [f"{server.url}/api/workflow_templates/{PACK_FOLDER}/{SIDE_BY_SIDE}.json", SIDE_BY_SIDE])
    page.wait_for_timeout(1500)
    page.keyboard.press("Escape")
    page.evaluate(DISMISS_OVERLAYS_JS)
    page.evaluate(BYPASS_JS, "TACA")
    image = run_from_the_ui(page, server)
    (stitch,) = [node for node in load_workflow(SIDE_BY_SIDE)["nodes"] if node["type"] == "ImageStitch"]
    gap = stitch["widgets_values"][2]  # direction, match_image_size, spacing_width, spacing_color
    assert image.shape[1] == 2 * TEST_SIZE + gap
    assert np.array_equal(image[:, :TEST_SIZE], image[:, TEST_SIZE + gap:]), "baseline | TACA bypassed: the halves differ"
    page.screenshot(path=str(SCREENSHOTS / f"{SIDE_BY_SIDE}-bypassed-after-run.png"))


def run_from_the_ui(page, server) -> np.ndarray:
    """Shrink the live graph to the test run, queue it with the Run button; the saved image."""
    page.evaluate(PREPARE_TEST_RUN_JS, [list(model_files.SUBSTITUTED_LOADERS), list(model_files.SUBSTITUTE), TEST_SIZE, TEST_STEPS])
    before = history_ids(server)
    page.locator(QUEUE_BUTTON).first.click()
    entry = wait_for_new_run(server, before)
    assert entry["status"]["status_str"] == "success", json.dumps(entry["status"])[:3000]
    prompt = entry["prompt"][2]
    saved = [i for i, node in prompt.items() if node["class_type"] == "SaveImage"]
    (decoded,) = [i for i in saved if prompt[prompt[i]["inputs"]["images"][0]]["class_type"] in ("VAEDecode", "ImageStitch")]
    (image,) = [np.asarray(Image.open(io.BytesIO(png)).convert("RGB")) for png in server.files(entry, decoded)]
    # The frontend received the outputs and shows them in every Save Image node.
    page.wait_for_function("window.app.graph.nodes.filter(n => n.type === 'SaveImage').every(n => n.imgs && n.imgs.length > 0)",
                           timeout=30_000)
    page.wait_for_timeout(500)
    return image


def test_the_templates_sidebar_lists_the_examples_under_the_pack(page, server):
    # What the README tells users to open: the Templates button of the left toolbar, then the
    # pack's entry (its folder name).
    page.keyboard.press("Escape")
    page.locator('button[aria-label="Templates"]').first.click()
    page.locator(f"text={PACK_FOLDER}").first.click()
    page.wait_for_timeout(1500)
    listed = page.evaluate("""() => [...document.querySelectorAll('h3')].filter(e => e.offsetParent !== null).map(e => e.innerText.trim())""")
    page.screenshot(path=str(SCREENSHOTS / "templates.png"))
    page.keyboard.press("Escape")
    assert set(SHIPPED) <= set(listed), listed


# Each of the pack's nodes as the search box adds it: its width, and its title's width in the
# font the canvas draws titles with.
NEW_NODE_TITLES_JS = """
(types) => {
  const measure = document.createElement('canvas').getContext('2d');
  return types.map(type => {
    const node = LiteGraph.createNode(type);
    measure.font = node.titleFontStyle;
    return {type, width: node.size[0], title: measure.measureText(node.title).width, margin: 2 * LiteGraph.NODE_TITLE_HEIGHT};
  });
}
"""


def test_the_packs_nodes_show_their_whole_title_when_added(page, server):
    # LiteGraph draws a title in the node's width less two title heights (the probe's was cut,
    # "TACA Attention Balance ..."); web/whole_titles.js sizes the pack's nodes to fit.
    ours = sorted(name for name, info in server.object_info.items() if info["python_module"] == f"custom_nodes.{PACK_FOLDER}")
    assert "TACABalanceProbe" in ours
    for node in page.evaluate(NEW_NODE_TITLES_JS, ours):
        assert node["width"] - node["margin"] >= node["title"], node
