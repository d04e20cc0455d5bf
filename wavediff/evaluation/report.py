"""The HTML listening report: one page, no network, sortable by any metric.

The page holds the summary table (mean ± 95% CI per system) and, per utterance, a row of
metric values followed by the audio players and spectrograms (matplotlib) of the reference
and of every generated version side by side. Clicking a column header sorts the utterances
by that metric, worst first (a second click reverses). The images and audio copies live in
``<report>_files/`` beside the page, or inside it as data URIs with ``embed=True``.
"""

from __future__ import annotations

import base64
import html
import math
import os
import re
import shutil
from datetime import datetime
from pathlib import Path
from typing import Any, Optional, Sequence
from urllib.parse import quote

import numpy as np

from wavediff._files import atomic_write_text
from wavediff.evaluation.metrics import METRIC_INFO
from wavediff.evaluation.stats import Summary

__all__ = ["write_assets", "spectrogram_db", "render_spectrogram", "build_html", "write_report",
           "assets_dir_for"]

SPEC_N_FFT = 1024
SPEC_HOP = 256
SPEC_RANGE_DB = 80.0


def assets_dir_for(report: Path) -> Path:
    """``<report stem>_files`` beside the report."""
    return report.with_name(f"{report.stem}_files")


# ---------------------------------------------------------------------- assets
def spectrogram_db(wav: np.ndarray, n_fft: int = SPEC_N_FFT, hop: int = SPEC_HOP) -> np.ndarray:
    """Log-magnitude STFT in dB, ``(n_fft // 2 + 1, frames)``, Hann window, centred frames."""
    import torch

    x = torch.from_numpy(np.ascontiguousarray(wav, dtype=np.float32))
    if x.numel() <= n_fft // 2:
        x = torch.nn.functional.pad(x, (0, n_fft // 2 + 1 - x.numel()))
    spec = torch.stft(x, n_fft, hop_length=hop, window=torch.hann_window(n_fft),
                      center=True, return_complex=True).abs()
    return (20.0 * torch.log10(spec.clamp(min=1e-5))).numpy()


def render_spectrogram(path: Path, spec_db: np.ndarray, sample_rate: int, vmax: float,
                       hop: int = SPEC_HOP) -> None:
    """Save ``spec_db`` (from :func:`spectrogram_db`) as a PNG with time and frequency axes."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    seconds = spec_db.shape[1] * hop / sample_rate
    fig = Figure(figsize=(5.2, 2.4), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.add_axes((0.1, 0.19, 0.88, 0.77))
    ax.imshow(spec_db, origin="lower", aspect="auto", cmap="magma", interpolation="nearest",
              vmin=vmax - SPEC_RANGE_DB, vmax=vmax,
              extent=(0.0, seconds, 0.0, sample_rate / 2000.0))
    ax.set_xlabel("time (s)", fontsize=8, labelpad=1)
    ax.set_ylabel("kHz", fontsize=8, labelpad=1)
    ax.tick_params(labelsize=7, length=2, pad=1)
    fig.savefig(path, format="png", pil_kwargs={"compress_level": 1})


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]", "_", name)[:80]


def write_assets(root: Path, index: int, ref: np.ndarray, gens: Sequence[np.ndarray],
                 sample_rate: int, uid: str = "") -> dict[str, Any]:
    """Spectrogram PNGs and FLAC copies of one utterance under ``root``; relative paths back.

    Returns ``{"reference": {"audio", "image"}, "generated": [{"audio", "image"}, ...]}``;
    the colour scale of every spectrogram follows the reference's peak.
    """
    import soundfile as sf

    root = Path(root)
    (root / "img").mkdir(parents=True, exist_ok=True)
    (root / "audio").mkdir(parents=True, exist_ok=True)
    stem = f"{index:05d}{'_' + _safe(uid) if uid else ''}"
    ref_spec = spectrogram_db(ref)
    vmax = float(ref_spec.max())
    out: dict[str, Any] = {"generated": []}
    for tag, wav in [("ref", ref)] + [(f"s{i}", g) for i, g in enumerate(gens)]:
        spec = ref_spec if tag == "ref" else spectrogram_db(wav)
        image, audio = f"img/{stem}_{tag}.png", f"audio/{stem}_{tag}.flac"
        render_spectrogram(root / image, spec, sample_rate, vmax)
        sf.write(str(root / audio), np.clip(wav, -1.0, 1.0), sample_rate, subtype="PCM_16",
                 format="FLAC")
        entry = {"audio": audio, "image": image}
        if tag == "ref":
            out["reference"] = entry
        else:
            out["generated"].append(entry)
    return out


# ---------------------------------------------------------------------- page
_CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:0;padding:18px 24px;
 color:#1d2330;background:#f6f7f9}
h1{font-size:22px;margin:0 0 4px}h2{font-size:17px;margin:22px 0 8px}
.meta{color:#5b6474;font-size:13px;margin:0}
table{border-collapse:collapse;background:#fff;font-size:13px}
th,td{border:1px solid #dde1e7;padding:3px 6px}
th{background:#eef1f5;font-weight:600;font-size:12px;line-height:1.25}
thead th{min-width:44px;max-width:86px}
#summary td.num{text-align:right;font-variant-numeric:tabular-nums;white-space:nowrap}
#summary td.best{font-weight:700;color:#0b5d1e;background:#e9f6ec}
#summary td.sys{font-weight:600;white-space:nowrap}
#summary small{color:#7a8394}
.dir{color:#7a8394;font-weight:400}
.notes{font-size:12px;color:#6b5200;background:#fff8e1;border:1px solid #f0dfa0;
 padding:6px 10px 6px 26px;margin:8px 0;max-width:1100px}
.failures{color:#8a1c1c;background:#fdecec;border-color:#f2b8b8}
.hint{font-size:12px;color:#5b6474;margin:0 0 6px}
#utt-table thead th{cursor:pointer;user-select:none;position:sticky;top:0;z-index:1}
#utt-table thead th:hover{background:#dfe5ee}
#utt-table th[aria-sort=ascending]::after{content:" \\25B2"}
#utt-table th[aria-sort=descending]::after{content:" \\25BC"}
#utt-table tbody{border-top:3px solid #c9cfd8}
#utt-table td.num{text-align:right;font-variant-numeric:tabular-nums}
#utt-table td.uid{font-weight:600;white-space:nowrap}
#utt-table td.sys{color:#3c4656;white-space:nowrap}
#utt-table small{color:#7a8394;font-weight:400}
.panels{display:flex;flex-wrap:wrap;gap:10px;padding:4px 0}
figure{margin:0;background:#fafbfc;border:1px solid #e3e6eb;padding:4px 6px}
figcaption{font-size:12px;font-weight:600;margin-bottom:2px}
figure audio{width:var(--w,520px);height:32px;display:block}
figure img{width:var(--w,520px);height:auto;aspect-ratio:520/240;display:block}
"""

_JS = """
(function(){
 const table=document.getElementById('utt-table');
 const select=document.getElementById('sort-system');
 let current=null, dir=1;
 function key(body,metric){
  if(metric==='id')return body.dataset.id;
  const sys=select?select.value:'0';
  const v=parseFloat(body.getAttribute('data-v-'+metric+'-'+sys));
  return isNaN(v)?null:v;
 }
 function sortBy(th,keepDir){
  const metric=th.dataset.metric;
  if(!keepDir){
   if(current===metric)dir=-dir;
   else dir=(metric==='id'||th.dataset.hib==='1')?1:-1;  /* worst first */
  }
  current=metric;
  const bodies=Array.from(table.tBodies);
  bodies.sort(function(a,b){
   const x=key(a,metric),y=key(b,metric);
   if(x===null&&y===null)return a.dataset.id<b.dataset.id?-1:1;
   if(x===null)return 1; if(y===null)return -1;
   if(x<y)return -dir; if(x>y)return dir;
   return a.dataset.id<b.dataset.id?-1:1;
  });
  bodies.forEach(function(b){table.appendChild(b);});
  table.querySelectorAll('thead th').forEach(function(h){h.removeAttribute('aria-sort');});
  th.setAttribute('aria-sort',dir>0?'ascending':'descending');
 }
 table.querySelectorAll('thead th[data-metric]').forEach(function(th){
  th.addEventListener('click',function(){sortBy(th,false);});
 });
 if(select)select.addEventListener('change',function(){
  const th=current&&table.querySelector('thead th[data-metric="'+current+'"]');
  if(th)sortBy(th,true);
 });
})();
"""


def _fmt(v: Optional[float], digits: int) -> str:
    return "–" if v is None or not math.isfinite(v) else f"{v:.{digits}f}"


def _summary_cell(s: Optional[Summary], digits: int, best: bool) -> str:
    if s is None or s.n == 0:
        return '<td class="num">–</td>'
    ci = f"<br><small>± {s.ci95:.{digits}f}</small>" if math.isfinite(s.ci95) else ""
    return f'<td class="num{" best" if best else ""}">{s.mean:.{digits}f}{ci}</td>'


def _heat(values: Sequence[float], higher_is_better: bool) -> list[str]:
    """A background per value: the worse within the column, the redder (empty if flat)."""
    finite = [v for v in values if v is not None and math.isfinite(v)]
    if len(finite) < 2 or max(finite) == min(finite):
        return ["" for _ in values]
    lo, hi = min(finite), max(finite)
    if hi - lo <= 0.01 * max(abs(hi), abs(lo)):  # a flat column: nothing stands out
        return ["" for _ in values]
    styles = []
    for v in values:
        if v is None or not math.isfinite(v):
            styles.append("")
            continue
        badness = (hi - v) / (hi - lo) if higher_is_better else (v - lo) / (hi - lo)
        styles.append(f' style="background:rgba(214,69,65,{0.04 + 0.32 * badness:.2f})"')
    return styles


def build_html(result: Any, src: Any, title: str = "wavediff evaluation") -> str:
    """The report page of an :class:`~wavediff.evaluation.runner.EvaluationResult`.

    ``src(relative_asset_path) -> str`` gives the URL of an image or audio copy.
    """
    from wavediff.version import __version__

    esc = html.escape
    systems = result.systems
    metrics = result.metrics
    compare = len(systems) > 1
    mos_col = result.reference_mos
    out = [f'<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">'
           f'<meta name="viewport" content="width=device-width,initial-scale=1">'
           f'<title>{esc(title)}</title><style>{_CSS}</style></head><body>']
    total_s = sum(u["seconds"] for u in result.utterances)
    out.append(f"<header><h1>{esc(title)}</h1><p class=\"meta\">reference: {esc(result.reference)}"
               f" &middot; {len(result.utterances)} utterances ({total_s / 60:.1f} min)"
               f" &middot; {datetime.now().strftime('%Y-%m-%d %H:%M')}"
               f" &middot; wavediff {esc(__version__)}</p></header>")

    # summary: one row per system, one column per metric (as in the utterance table)
    out.append('<section id="summary"><h2>Summary</h2><table id="summary-table"><thead><tr>'
               '<th>system</th>')
    for m in metrics:
        info = METRIC_INFO[m]
        unit = f" <small>{esc(info.unit)}</small>" if info.unit else ""
        out.append(f'<th title="{esc(info.description)}">{esc(info.label)}{unit} '
                   f'<span class="dir">{"↑" if info.higher_is_better else "↓"}</span></th>')
    out.append("</tr></thead><tbody>")
    best: dict[str, float] = {}
    for m in metrics:
        means = [s.summary[m].mean for s in systems if m in s.summary and s.summary[m].n]
        if compare and len(means) > 1:
            best[m] = max(means) if METRIC_INFO[m].higher_is_better else min(means)
    rows = [(s, True) for s in systems] + ([(mos_col, False)] if mos_col is not None else [])
    for s, scored in rows:
        name = s.name if scored else "reference"
        out.append(f'<tr><td class="sys" title="{esc(s.gen_dir)}">{esc(name)}</td>')
        for m in metrics:
            summ = s.summary.get(m)
            is_best = scored and m in best and summ is not None and summ.n > 0 and summ.mean == best[m]
            out.append(_summary_cell(summ, METRIC_INFO[m].digits, is_best))
        out.append("</tr>")
    out.append("</tbody></table>")
    out.append('<p class="hint">mean ± 95% confidence interval over utterances; ↑ higher is '
               'better, ↓ lower is better; hover a metric for its definition.</p>')
    if result.notes:
        out.append('<ul class="notes">' + "".join(f"<li>{esc(n)}</li>" for n in result.notes[:50])
                   + (f"<li>… {len(result.notes) - 50} more</li>" if len(result.notes) > 50 else "")
                   + "</ul>")
    if result.failures:
        out.append('<ul class="notes failures">' + "".join(
            f"<li>{esc(uid)}: {esc(msg)}</li>" for uid, msg in result.failures) + "</ul>")
    out.append("</section>")

    # utterances
    out.append('<section id="utterances"><h2>Utterances</h2>'
               '<p class="hint">Click a column to sort the utterances by it, worst first '
               '(click again to reverse). Shaded cells are the worse values of their column.')
    if compare:
        out.append(' Sort by the values of <select id="sort-system">' + "".join(
            f'<option value="{i}">{esc(s.name)}</option>' for i, s in enumerate(systems))
            + "</select>.")
    out.append('</p><table id="utt-table"><thead><tr><th data-metric="id">utterance</th>')
    if compare:
        out.append('<th>system</th>')
    for m in metrics:
        info = METRIC_INFO[m]
        unit = f" <small>{esc(info.unit)}</small>" if info.unit else ""
        out.append(f'<th data-metric="{m}" data-hib="{int(info.higher_is_better)}" '
                   f'title="{esc(info.description)}">{esc(info.label)}{unit} '
                   f'<span class="dir">{"↑" if info.higher_is_better else "↓"}</span></th>')
    out.append("</tr></thead>")
    uids = result.uids
    heat: dict[tuple[int, str], dict[str, str]] = {}
    for m in metrics:  # one scale per metric across every folder, so folders compare by colour
        keys = [(si, u) for si in range(len(systems)) for u in uids]
        styles = _heat([systems[si].values.get(u, {}).get(m) for si, u in keys],
                       METRIC_INFO[m].higher_is_better)
        for (si, u), style in zip(keys, styles):
            heat.setdefault((si, m), {})[u] = style
    n_panels = 1 + len(systems)
    width = 440 if n_panels == 3 else 520  # one row of three, or rows of two on most screens
    ncols = 1 + int(compare) + len(metrics)
    for u in result.utterances:
        uid = u["id"]
        attrs = " ".join(
            f'data-v-{m}-{si}="{_finite_attr(s.values.get(uid, {}).get(m))}"'
            for si, s in enumerate(systems) for m in metrics)
        out.append(f'<tbody class="utt" data-id="{esc(uid)}" {attrs}>')
        for si, s in enumerate(systems):
            out.append("<tr class=\"vals\">")
            if si == 0:
                out.append(f'<td class="uid" rowspan="{len(systems)}">{esc(uid)}<br>'
                           f'<small>{u["seconds"]:.2f} s</small></td>')
            if compare:
                out.append(f'<td class="sys">{esc(s.name)}</td>')
            for m in metrics:
                v = s.values.get(uid, {}).get(m)
                out.append(f'<td class="num"{heat[(si, m)][uid]}>{_fmt(v, METRIC_INFO[m].digits)}</td>')
            out.append("</tr>")
        out.append(f'<tr class="media"><td colspan="{ncols}"><div class="panels" '
                   f'style="--w:{width}px">')
        assets = u.get("assets") or {}
        panels = []
        if assets:
            panels.append(("reference", assets["reference"]))
            panels += [(s.name, a) for s, a in zip(systems, assets["generated"])]
        for name, a in panels:
            out.append(f'<figure><figcaption>{esc(name)}</figcaption>'
                       f'<audio controls preload="none" src="{esc(src(a["audio"]))}"></audio>'
                       f'<img alt="spectrogram of {esc(uid)}, {esc(name)}" '
                       f'src="{esc(src(a["image"]))}"></figure>')
        out.append("</div></td></tr></tbody>")
    out.append(f"</table></section><script>{_JS}</script></body></html>")
    return "".join(out)


def _finite_attr(v: Optional[float]) -> str:
    return "" if v is None or not math.isfinite(v) else repr(float(v))


def write_report(result: Any, path: Path, assets: Optional[Path], *, embed: bool = False,
                 title: str = "wavediff evaluation") -> Path:
    """Write the report page atomically; returns its path.

    ``assets`` is the folder :func:`write_assets` filled. With ``embed`` the assets go into
    the page as data URIs and the folder is deleted; otherwise it becomes
    ``<report stem>_files/`` beside the page (replacing an older one).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    final_assets = assets_dir_for(path)
    if embed or assets is None:
        def src(rel: str) -> str:
            mime = "image/png" if rel.endswith(".png") else "audio/flac"
            data = base64.b64encode((Path(assets) / rel).read_bytes()).decode("ascii")
            return f"data:{mime};base64,{data}"
    else:
        def src(rel: str) -> str:
            return quote(f"{final_assets.name}/{rel}")
    page = build_html(result, src, title)
    if assets is not None and Path(assets).exists():
        if embed:
            shutil.rmtree(assets, ignore_errors=True)
        elif Path(assets).resolve() != final_assets.resolve():
            if final_assets.exists():
                shutil.rmtree(final_assets)
            os.replace(assets, final_assets)
    atomic_write_text(path, page)
    return path
