"""The report of a TACA evaluation (tools/taca_eval.py): numbers, table, gallery and plot.

Rows are the settings (the baseline first), columns the prompt categories and CLIP, as in
the paper's table. A setting's cell compares it with the baseline on the same prompts and
seeds: its mean, the paired difference with a 95 % bootstrap interval (eval_stats) and the
share of pairs where it scored higher. Files written into the evaluation's folder:

    report.md     the table, its legend and what was measured with what
    report.html   one file, images embedded: a row per prompt and seed, every setting side by
                  side with its scores; filters per category, sorting by difference
    report.png    the score against γ₀, one line per threshold (and LoRA or option), one panel
                  per column, with the interval bars
    report.json   every number: the table and each image's scores
    summary.csv, scores.csv   the same as tables
"""

import base64
import csv
import html
import io
import json
import math
import os

CATEGORY_ORDER = ("color", "shape", "texture", "spatial")
CLIP = "clip"
SPATIAL_NOTE = ("The spatial score judges the relation from boxes found by {detector}, where "
                "T2I-CompBench uses UniDet: its numbers compare these settings with each other, not with the paper's.")
LEGEND = ("Each setting's cell: its mean score · Δ the paired difference from the baseline (same prompt and seed) "
          "[95 % bootstrap interval] · the share of pairs where the setting scored higher.")


def number(value):
    """A score as a float, or None where it is missing or not a number."""
    if value is None or isinstance(value, bool):
        return None
    try:
        value = float(value)
    except (TypeError, ValueError):
        return None
    return value if math.isfinite(value) else None


def columns(rows: list) -> list:
    """[{name, metric}]: one column per prompt category that has a score of its own (attribute binding or
    spatial), in the paper's order, then CLIP over every prompt."""
    metrics = {}
    for row in rows:
        for name in sorted(row["scores"] or {}):
            if name != CLIP and row["category"] is not None and number(row["scores"][name]) is not None:
                metrics.setdefault(row["category"], name)
    ordered = [c for c in CATEGORY_ORDER if c in metrics] + sorted(c for c in metrics if c not in CATEGORY_ORDER)
    result = [{"name": c, "metric": metrics[c]} for c in ordered]
    if any(number((row["scores"] or {}).get(CLIP)) is not None for row in rows):
        result.append({"name": "CLIP", "metric": CLIP})
    return result


def value_of(row: dict, column: dict):
    if column["metric"] != CLIP and row["category"] != column["name"]:
        return None
    return number((row["scores"] or {}).get(column["metric"]))


def pairs(rows: list, setting: int, column: dict) -> tuple:
    """(baseline values, the setting's values), paired by prompt and seed, where both have a score."""
    baseline = {(r["prompt"], r["category"], r["seed"]): value_of(r, column) for r in rows if r["setting"] == 0}
    before, after = [], []
    for r in rows:
        if r["setting"] != setting:
            continue
        b, v = baseline.get((r["prompt"], r["category"], r["seed"])), value_of(r, column)
        if b is not None and v is not None:
            before.append(b)
            after.append(v)
    return before, after


def summarize(settings: list, labels: list, rows: list, n_boot: int = 2000) -> dict:
    """The table: for the baseline (setting 0) each column's mean; for each other setting the paired comparison."""
    from eval_stats import paired_difference

    cols = columns(rows)
    table = []
    for i, (setting, label) in enumerate(zip(settings, labels)):
        cells = {}
        for column in cols:
            if i == 0:
                values = [v for r in rows if r["setting"] == 0 and (v := value_of(r, column)) is not None]
                cells[column["name"]] = {"mean": sum(values) / len(values), "n": len(values)} if values else None
            else:
                before, after = pairs(rows, i, column)
                cells[column["name"]] = dict(paired_difference(before, after, n_boot=n_boot, seed=0)) if before else None
        table.append({"label": label, "setting": setting, "cells": cells})
    return {"columns": cols, "rows": table}


def cell_text(cell, baseline: bool) -> str:
    if cell is None:
        return "–"
    if baseline:
        return f"{cell['mean']:.4f}"
    return (f"{cell['mean']:.4f} · Δ {cell['diff']:+.4f} [{cell['low']:+.4f}, {cell['high']:+.4f}] · "
            f"{100 * cell['share_higher']:.0f} %")


def counts(rows: list) -> dict:
    return {"planned": len(rows), "made": sum(r["file"] is not None for r in rows),
            "scored": sum(r["scores"] is not None for r in rows)}


def detector_name(meta: dict) -> str:
    spatial = (meta.get("scorers") or {}).get("spatial")
    known = isinstance(spatial, dict) and spatial.get("detector")
    return f"{spatial['detector']}, a zero-shot detector" if known else "a zero-shot detector"


def scorer_lines(scorers: dict) -> list:
    """The scorer models and methods (eval_scorers' describe()) as Markdown list items."""
    lines = []
    for name, value in scorers.items():
        if isinstance(value, dict):
            value = "; ".join(f"{k}: {v}" for k, v in value.items())
        lines.append(f"- {name}: {value}")
    return lines


def markdown(summary: dict, rows: list, meta: dict) -> str:
    cols = summary["columns"]
    lines = ["# TACA evaluation", ""]
    if not cols:
        lines += ["No image has a score yet: run the score phase (taca_eval.py score --out FOLDER).", ""]
    else:
        lines += ["| setting | " + " | ".join(c["name"] for c in cols) + " |", "| --- |" + " --- |" * len(cols)]
        for i, row in enumerate(summary["rows"]):
            lines.append(f"| {row['label']} | " + " | ".join(cell_text(row["cells"].get(c["name"]), i == 0) for c in cols) + " |")
        lines += ["", LEGEND]
        n = [f"{c['name']} {max((r['cells'].get(c['name']) or {}).get('n', 0) for r in summary['rows'])}" for c in cols]
        lines += [f"Pairs (prompt × seed) per column: {', '.join(n)}.", ""]
        what = {"attribute": "BLIP-VQA attribute binding (T2I-CompBench: the product of P(yes) over the prompt's noun phrases)",
                "spatial": "the spatial rule of T2I-CompBench on detected boxes", CLIP: "CLIPScore"}
        by_metric = {}
        for c in cols:
            by_metric.setdefault(c["metric"], []).append(c["name"])
        lines += ["Scores: " + "; ".join(f"{', '.join(names)}: {what.get(m, m)}" for m, names in by_metric.items()) + "."]
        if any(c["metric"] == "spatial" for c in cols):
            lines += ["", SPATIAL_NOTE.format(detector=detector_name(meta))]
    n = counts(rows)
    lines += ["", f"Images: {n['made']} of {n['planned']} made, {n['scored']} scored; seeds {meta.get('seeds')}. "
              "Pairs with a missing image or score are left out of the comparison."]
    lines += [f"Workflow {meta.get('workflow_file')} (hash {meta.get('workflow')}), ComfyUI {meta.get('comfyui')}. "
              f"Bootstrap: {meta.get('bootstrap')} resamples.", "", "Scorers:", *scorer_lines(meta.get("scorers") or {})]
    return "\n".join(lines) + "\n"


def write_csvs(out: str, summary: dict, rows: list, labels: list) -> dict:
    summary_path, scores_path = os.path.join(out, "summary.csv"), os.path.join(out, "scores.csv")
    fields = ["n", "mean", "mean_baseline", "diff", "low", "high", "share_higher"]
    with open(summary_path, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["setting", "column", "metric", *fields])
        for row in summary["rows"]:
            for c in summary["columns"]:
                cell = row["cells"].get(c["name"]) or {}
                w.writerow([row["label"], c["name"], c["metric"], *(cell.get(k, "") for k in fields)])
    names = sorted({k for r in rows for k in (r["scores"] or {})})
    with open(scores_path, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["key", "prompt", "category", "seed", "setting", "file", *names])
        for r in rows:
            w.writerow([r["key"], r["prompt"], r["category"] or "", r["seed"], labels[r["setting"]], r["file"] or "",
                        *("" if (v := (r["scores"] or {}).get(k)) is None else v for k in names)])
    return {"summary_csv": summary_path, "scores_csv": scores_path}


# --- report.html -----------------------------------------------------------------------------

def image_uri(path: str, size: int) -> str:
    """An image file as a data URI: as it is (PNG) when small, else a JPEG with its longest side `size`."""
    with open(path, "rb") as f:
        data = f.read()
    mime = "image/png"
    try:
        from PIL import Image
    except ImportError:
        Image = None
    if Image is not None:
        with Image.open(io.BytesIO(data)) as image:
            if max(image.size) > size:
                image = image.convert("RGB")
                image.thumbnail((size, size))
                buffer = io.BytesIO()
                image.save(buffer, "JPEG", quality=85)
                data, mime = buffer.getvalue(), "image/jpeg"
    return f"data:{mime};base64,{base64.b64encode(data).decode()}"


HTML_STYLE = """
body{font-family:system-ui,sans-serif;margin:1.5em;color:#222}
table.summary{border-collapse:collapse;margin:1em 0}table.summary td,table.summary th{border:1px solid #ccc;padding:.3em .6em;text-align:right}
table.summary td:first-child{text-align:left}
.controls{position:sticky;top:0;background:#fff;padding:.5em 0;border-bottom:1px solid #ccc;z-index:1}
.controls button{margin-right:.3em}.controls button.on{background:#333;color:#fff}
.row{margin:1em 0;border-bottom:1px solid #eee;padding-bottom:.5em}.row h3{font-size:1em;margin:.2em 0}
.row .tag{color:#666;font-weight:normal}.images{display:flex;flex-wrap:wrap;gap:.6em}
figure{margin:0;width:var(--size);font-size:.8em}figure img{width:100%;image-rendering:auto}
.up{color:#0a0}.down{color:#c00}.missing{width:var(--size);height:var(--size);background:#eee;display:flex;align-items:center;justify-content:center}
"""

HTML_SCRIPT = """
const rows=[...document.querySelectorAll('.row')], list=document.getElementById('rows');
let category='all';
function show(){for(const r of rows){r.style.display=(category==='all'||r.dataset.category===category)?'':'none';}}
document.querySelectorAll('.controls button').forEach(b=>b.onclick=()=>{category=b.dataset.category;
  document.querySelectorAll('.controls button').forEach(x=>x.classList.toggle('on',x===b));show();});
document.getElementById('sort').onchange=e=>{const [key,dir]=e.target.value.split(' ');
  const v=r=>{const x=parseFloat(r.dataset[key]);return isNaN(x)?null:x;};
  const sorted=[...rows].sort((a,b)=>{if(key==='order')return (+a.dataset.order)-(+b.dataset.order);
    const x=v(a),y=v(b);if(x===null||y===null)return (x===null)-(y===null);return dir==='up'?y-x:x-y;});
  for(const r of sorted)list.appendChild(r);};
"""


def change_of(by_setting: dict, column, clip_column) -> float:
    """How much a prompt and seed moved: the largest |Δ| from the baseline over the settings, on the
    category's score (CLIP where the category has none); -1 where nothing is scored."""
    base, changes = by_setting.get(0), [-1.0]
    col = column or clip_column
    if base is not None and col is not None and (b := value_of(base, col)) is not None:
        changes += [abs(v - b) for i, r in by_setting.items() if i and (v := value_of(r, col)) is not None]
    return max(changes)


def html_report(summary: dict, rows: list, labels: list, meta: dict, out: str, size: int, notes: str, gallery: int = 500) -> str:
    esc = html.escape
    cols = summary["columns"]
    head = "".join(f"<th>{esc(c['name'])}</th>" for c in cols)
    body = "".join(
        f"<tr><td>{esc(row['label'])}</td>" + "".join(f"<td>{esc(cell_text(row['cells'].get(c['name']), i == 0))}</td>" for c in cols) + "</tr>"
        for i, row in enumerate(summary["rows"]))
    groups = {}
    for r in rows:
        groups.setdefault((r["prompt"], r["category"], r["seed"]), {})[r["setting"]] = r
    categories = sorted({k[1] for k in groups if k[1] is not None}, key=lambda c: (c not in CATEGORY_ORDER, CATEGORY_ORDER.index(c) if c in CATEGORY_ORDER else 0, c))
    by_category = {c["name"]: c for c in cols if c["metric"] != CLIP}
    clip_column = next((c for c in cols if c["metric"] == CLIP), None)

    def score_of(r, column):
        return None if r is None or column is None else value_of(r, column)

    options = ['<option value="order up">prompt order</option>']
    for i in range(1, len(labels)):
        for what, name in (("score", "the category's score"), ("clip", "CLIP")):
            for direction, words in (("up", "most improved first"), ("down", "most worsened first")):
                options.append(f'<option value="d{i}{what} {direction}">Δ {esc(name)}, {esc(labels[i])}: {words}</option>')
    shown, notice = list(groups.items()), ""
    if len(shown) > gallery:  # a whole benchmark would make a page no browser opens: keep what moved most
        kept = sorted(range(len(shown)), key=lambda k: -change_of(shown[k][1], by_category.get(shown[k][0][1]), clip_column))
        shown = [shown[k] for k in sorted(kept[:gallery])]
        notice = (f"<p><b>The gallery shows {gallery} of the {len(groups)} prompts and seeds: those whose score moved "
                  "most from the baseline in any setting (report.json and scores.csv hold them all; --gallery N "
                  "shows more).</b></p>")
    html_rows = []
    for order, ((prompt, category, seed), by_setting) in enumerate(shown):
        column = by_category.get(category)
        base = by_setting.get(0)
        data, figures = [f'data-order="{order}"', f'data-category="{esc(category or "")}"'], []
        for i, label in enumerate(labels):
            r = by_setting.get(i)
            diffs = {}
            for what, col in (("score", column), ("clip", clip_column)):
                s, b = score_of(r, col), score_of(base, col)
                if i and s is not None and b is not None:
                    diffs[what] = s - b
                    data.append(f'data-d{i}{what}="{s - b:.6f}"')
            scores = []
            for what, col in (("score", column), ("clip", clip_column)):
                s = score_of(r, col)
                if col is None or s is None:
                    continue
                d = diffs.get(what)
                arrow = "" if d is None else f' <span class="{"up" if d > 0 else "down" if d < 0 else ""}">Δ {d:+.3f}</span>'
                scores.append(f"{esc(col['metric'])} {s:.3f}{arrow}")
            if r is not None and r["file"]:
                picture = f'<img loading="lazy" alt="{esc(label)}" src="{image_uri(os.path.join(out, r["file"]), size)}">'
            else:
                picture = '<div class="missing">not made yet</div>'
            figures.append(f"<figure>{picture}<figcaption><b>{esc(label)}</b><br>{'<br>'.join(scores) or 'not scored'}</figcaption></figure>")
        html_rows.append(f'<div class="row" {" ".join(data)}><h3>{esc(prompt)} <span class="tag">{esc(category or "")} · seed {seed}</span></h3>'
                         f'<div class="images">{"".join(figures)}</div></div>')
    buttons = "".join(f'<button data-category="{esc(c)}">{esc(c)}</button>' for c in categories)
    return (f'<!DOCTYPE html><html><head><meta charset="utf-8"><title>TACA evaluation</title><style>{HTML_STYLE}'
            f':root{{--size:{min(size, 256)}px}}</style></head><body><h1>TACA evaluation</h1>'
            f'<table class="summary"><tr><th>setting</th>{head}</tr>{body}</table><p>{esc(LEGEND)}</p>'
            + "".join(f"<p>{esc(line)}</p>" for line in notes.split("\n") if line.strip())
            + notice + f'<div class="controls"><button data-category="all" class="on">all</button>{buttons} '
            f'<label>sort: <select id="sort">{"".join(options)}</select></label></div>'
            f'<div id="rows">{"".join(html_rows)}</div><script>{HTML_SCRIPT}</script></body></html>')


# --- report.png --------------------------------------------------------------------------------

def plot(summary: dict, path: str) -> None:
    """The score against γ₀ per column: one line per threshold (with LoRA and options), the baseline dashed."""
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError:
        raise RuntimeError("report.png needs matplotlib, which this Python lacks: pip install matplotlib "
                           "(it is in the pack's requirements.txt), then run 'taca_eval.py report' again. "
                           "The other report files are written.") from None
    cols = summary["columns"]
    baseline, settings = summary["rows"][0], summary["rows"][1:]
    figure = Figure(figsize=(4 * max(len(cols), 1), 3.6), layout="constrained")
    FigureCanvasAgg(figure)
    for n, column in enumerate(cols):
        axes = figure.add_subplot(1, max(len(cols), 1), n + 1)
        lines = {}
        for row in settings:
            cell, setting = row["cells"].get(column["name"]), row["setting"]
            if cell is None or "gamma" not in setting:
                continue
            rest = {k: v for k, v in setting.items() if k != "gamma"}
            label = ", ".join([f"threshold {rest['threshold']:g}"] + ([f"LoRA {rest['lora']}"] if "lora" in rest else [])
                              + [f"{k} {v}" for k, v in sorted(rest.get("advanced", {}).items())])
            lines.setdefault(label, []).append((setting["gamma"], cell))
        gammas = sorted({g for points in lines.values() for g, _ in points} | {1.0})
        dodge = 0.01 * (gammas[-1] - gammas[0]) or 0.01  # overlapping bars side by side
        for j, (label, points) in enumerate(lines.items()):
            points.sort(key=lambda p: p[0])
            x = [g + dodge * (j - (len(lines) - 1) / 2) for g, _ in points]
            y = [c["mean_baseline"] + c["diff"] for _, c in points]
            low = [c["diff"] - c["low"] for _, c in points]
            high = [c["high"] - c["diff"] for _, c in points]
            axes.errorbar(x, y, yerr=[low, high], marker="o", capsize=3, label=label)
        base = baseline["cells"].get(column["name"])
        if base is not None:
            axes.axhline(base["mean"], color="0.4", linestyle="--", linewidth=1)
            axes.plot([1.0], [base["mean"]], marker="s", color="0.2", linestyle="none", label="baseline (γ₀ 1: TACA off)")
        axes.set_title(f"{column['name']} ({column['metric']})")
        axes.set_xlabel("γ₀")
        axes.set_ylabel("mean score")
        axes.grid(alpha=0.3)
        if n == 0:
            axes.legend(fontsize="small")
    figure.suptitle("Score against γ₀; bars: 95 % bootstrap interval of the paired difference, placed on the baseline's mean",
                    fontsize="medium")
    figure.savefig(path, dpi=110)


def write_report(out: str, settings: list, labels: list, rows: list, meta: dict, n_boot: int = 2000, html_size: int = 256,
                 gallery: int = 500) -> dict:
    """Every report file in `out`; {"markdown": the table as text, "files": {kind: path}, "problems": [...]}.

    rows: one per planned image: key, prompt, category, seed, setting (index into settings, 0 the
    baseline), file (relative to out, None when not made) and scores (dict, None when not scored)."""
    summary = summarize(settings, labels, rows, n_boot)
    text = markdown(summary, rows, meta)
    files, problems = {}, []
    files["markdown"] = os.path.join(out, "report.md")
    with open(files["markdown"], "w", encoding="utf-8") as f:
        f.write(text)
    files["json"] = os.path.join(out, "report.json")
    with open(files["json"], "w", encoding="utf-8") as f:
        json.dump({"meta": meta, "settings": [{"label": l, "setting": s} for l, s in zip(labels, settings)],
                   "summary": summary, "images": rows, "counts": counts(rows)}, f, indent=1, ensure_ascii=False)
    files.update(write_csvs(out, summary, rows, labels))
    notes = text.split(LEGEND, 1)[-1] if LEGEND in text else text.split("\n", 2)[-1]
    files["html"] = os.path.join(out, "report.html")
    with open(files["html"], "w", encoding="utf-8") as f:
        f.write(html_report(summary, rows, labels, meta, out, html_size, notes, gallery))
    if summary["columns"] and len(settings) > 1:
        try:
            plot(summary, os.path.join(out, "report.png"))
            files["plot"] = os.path.join(out, "report.png")
        except RuntimeError as e:
            problems.append(str(e))
    return {"markdown": text, "files": files, "problems": problems, "summary": summary}
