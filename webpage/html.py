"""A ``Story`` as one self-contained HTML page: ladder, frames, messages, key schedule, SAS, claims.

Everything that came from a peer or a file (alert reasons, plaintexts, identities,
addresses) goes through ``text``: escaped for HTML, control and bidirectional-override
characters shown as escapes, so a hostile peer can neither inject markup nor make a line
read as something else. The page loads nothing (``style.CONTENT_SECURITY_POLICY``).

(About 490 lines: one small function per section of the page, in the page's order, all
on the one escaping rule above; the model, the styles and the claims live beside it.)
"""

from __future__ import annotations

import html
import re

from explain.rows import SECRET_OFFSET

from .model import Claim, Compact, Derivation, FieldView, Leg, RecordView, Step, StepGroup, Story
from .style import CONTENT_SECURITY_POLICY, CSS, SCRIPT

HEX_LINE = 16
_INVISIBLE = re.compile(
    "[\x00-\x08\x0b-\x1f\x7f-\x9f\u200b-\u200f\u2028-\u202e\u2060-\u2069\ufeff]"
)
_SECTIONS = (
    ("glance", "At a glance"),
    ("ladder", "The ladder"),
    ("frames", "Every frame, byte by byte"),
    ("messages", "The records"),
    ("schedule", "The key schedule"),
    ("sas", "The SAS"),
    ("claims", "What this proves, and what it does not"),
)


def _escape_char(match: re.Match[str]) -> str:
    code = ord(match.group())
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def text(value: object) -> str:
    """Any text for the page: invisible characters made visible, then HTML-escaped."""
    return html.escape(_INVISIBLE.sub(_escape_char, str(value)), quote=True)


def hexdump(shown: bytes, size: int) -> str:
    """Hex in lines of 16 bytes (groups of two), and how long the value was if cut."""
    if not size:
        return "(empty)"
    lines = []
    for start in range(0, len(shown), HEX_LINE):
        chunk = shown[start : start + HEX_LINE].hex()
        lines.append(" ".join(chunk[i : i + 4] for i in range(0, len(chunk), 4)))
    if size > len(shown):
        lines.append(f"… {size} bytes in all")
    return "\n".join(lines)


def _plaintext(data: bytes, size: int) -> str:
    try:
        decoded = data.decode("utf-8")
    except UnicodeDecodeError:
        return f'<pre class="hex">{text(hexdump(data, size))}</pre>'
    more = f"\n… {size} bytes in all" if size > len(data) else ""
    return f"<pre>{text(decoded + more)}</pre>"


def _badge(kind: str, word: str) -> str:
    return f'<span class="badge {kind}">{text(word)}</span>'


# --------------------------------------------------------------------------- sections


def _header(story: Story) -> str:
    parts = [f"<h1>{text(story.title)}</h1>", f'<p class="source">{text(story.source)}</p>']
    if story.seed is not None:
        parts.append(
            '<p class="banner seeded" role="note"><strong>Deterministic, insecure:</strong>'
            f" every random value of this session came from the seed {text(repr(story.seed))}"
            " (--deterministic). Anyone who knows the seed can decrypt the session. Each value"
            f" that follows from it is marked {_badge('seeded', 'seeded')}.</p>"
        )
    if story.with_secrets:
        parts.append(
            '<p class="banner secrets" role="note"><strong>This page holds secrets:</strong>'
            " traffic keys and the values derived with them, each marked"
            f" {_badge('secret', 'secret')}. Whoever reads it can decrypt the session: share"
            " it like a key log.</p>"
        )
    for note in story.notes:
        parts.append(f'<p class="note">{text(note)}</p>')
    return "<header>" + "".join(parts) + "</header>"


def _toc() -> str:
    items = "".join(f'<li><a href="#{key}">{text(title)}</a></li>' for key, title in _SECTIONS)
    return (
        f'<nav class="toc" aria-label="Contents"><ol>{items}</ol></nav>'
        '<div id="tools" hidden><button type="button" data-open>Open every frame</button> '
        '<button type="button" data-close>Close every frame</button></div>'
    )


def _leg_title(leg: Leg, story: Story) -> str:
    if len(story.legs) == 1:
        return ""
    return f"Leg {leg.number}: {leg.client} ↔ {leg.server}"


def _glance(story: Story) -> str:
    out = [f'<section id="glance"><h2>{text(_SECTIONS[0][1])}</h2>']
    parties = ", ".join(p.title for p in story.parties)
    out.append(f"<p>{story.frames} frames between {text(parties)}.</p>")
    for leg in story.legs:
        title = _leg_title(leg, story)
        if title:
            out.append(f"<h3>{text(title)}</h3>")
        facts = "".join(f"<dt>{text(k)}</dt><dd>{text(v)}</dd>" for k, v in leg.facts)
        facts += f"<dt>outcome</dt><dd>{text(leg.outcome)}</dd>"
        out.append(f'<dl class="facts">{facts}</dl>')
        if not leg.opened and leg.sealed_reason:
            out.append(
                '<p class="banner lesson"><strong>Why this session stays sealed:</strong> '
                f"{text(leg.sealed_reason)}</p>"
            )
        elif leg.sealed_reason:
            out.append(f'<p class="note">Partly sealed: {text(leg.sealed_reason)}</p>')
    out.append("</section>")
    return "".join(out)


def _lane(story: Story, key: str) -> int:
    return next(i for i, p in enumerate(story.parties) if p.key == key)


def _arrow_label(step: Step) -> str:
    label = step.title
    if step.kind in ("alert", "close", "key_update", "unknown") and step.note:
        note = step.note if len(step.note) <= 80 else step.note[:79] + "…"
        label += f": {note}"
    if step.kind == "alert":
        label = "ALERT " + label if not label.startswith("ALERT") else label
    return label


def _ladder(story: Story) -> str:
    lanes = "two" if len(story.parties) == 2 else "three"
    heads = "".join(f'<div class="lane">{text(p.title)}</div>' for p in story.parties)
    out = [
        f'<section id="ladder"><h2>{text(_SECTIONS[1][1])}</h2>',
        "<p>One arrow per frame, in the order they crossed; follow one to its bytes."
        " Handshake frames are blue, records green, key updates purple, alerts red with a"
        " double line and the word ALERT, close_notify grey.</p>",
        f'<div class="lanes {lanes}" aria-hidden="true">{heads}</div>',
        f'<ol class="ladder {lanes}" aria-label="frames in order">',
    ]
    for item in story.steps:
        if isinstance(item, Step):
            a, b = _lane(story, item.sender), _lane(story, item.receiver)
            span = f"span-{min(a, b)}{max(a, b)}"
            way = "ltr" if a < b else "rtl"
            when = f' <span class="time">+{item.time:.3f} s</span>' if item.time is not None else ""
            out.append(
                f'<li class="arrow {way} {span} kind-{item.kind}" data-frame="{item.number}">'
                f'<a href="#frame-{item.number}" id="arrow-{item.number}">'
                f'<span class="num">{item.number}</span> '
                f'<span class="label">{text(_arrow_label(item))}</span>'
                f'<span class="vh">, {text(item.sender)} to {text(item.receiver)}</span>{when}'
                "</a></li>"
            )
        else:
            lanes_used = {_lane(story, key) for flow in item.flows for key in flow}
            span = f"span-{min(lanes_used)}{max(lanes_used)}"
            way = "both"
            if len(item.flows) == 1:
                ((sender, receiver),) = item.flows
                way = "ltr" if _lane(story, sender) < _lane(story, receiver) else "rtl"
            out.append(
                f'<li class="arrow group {way} {span} kind-record" data-group="{item.first}">'
                f'<a href="#group-{item.first}" id="arrow-group-{item.first}">'
                f'<span class="num">{item.first}–{item.last}</span> '
                f'<span class="label">{text(_group_label(item))}</span></a></li>'
            )
    out.append("</ol></section>")
    return "".join(out)


def _size(n: int) -> str:
    if n >= 1 << 20:
        return f"{n / (1 << 20):.1f} MiB"
    if n >= 1 << 10:
        return f"{n / (1 << 10):.1f} KiB"
    return f"{n} bytes"


def _group_label(group: StepGroup) -> str:
    flows = ", ".join(f"{n} {s} → {r}" for (s, r), n in group.flows.items())
    return f"{group.count} records folded ({flows}), {_size(group.size)}: open the list"


def _fields_table(step: Step) -> str:
    rows = []
    for f in step.fields:
        rows.append(_field_row(f))
    return (
        f'<div class="scroll" tabindex="0" role="region" aria-label="bytes of frame {step.number}">'
        f"<table><caption>Every byte of frame {step.number}, as --explain prints it</caption>"
        '<thead><tr><th scope="col">offset</th><th scope="col">field</th>'
        '<th scope="col">bytes (hex)</th><th scope="col">meaning</th></tr></thead>'
        f"<tbody>{''.join(rows)}</tbody></table></div>"
    )


def _field_row(f: FieldView) -> str:
    offset = "—" if f.offset == SECRET_OFFSET else f"{f.offset:04x}"
    cls = ' class="seeded"' if f.seeded else ""
    mark = _badge("seeded", "seeded") if f.seeded else ""
    return (
        f'<tr{cls}><td class="num">{offset}</td><td><code>{text(f.name)}</code>{mark}</td>'
        f'<td class="hex">{text(hexdump(f.shown, f.size))}</td><td>{text(f.meaning)}</td></tr>'
    )


def _record_box(step: Step, record: RecordView) -> str:
    where = f"epoch {record.epoch}" if record.epoch is not None else "epoch unknown"
    seq = record.seq if record.seq is not None else "?"
    out = [f"<h4>Record {text(seq)} of {text(step.sender)} → {text(step.receiver)}, {where}</h4>"]
    if record.seq is not None:
        padded = record.seq.to_bytes(12, "big").hex()
        if record.nonce is not None and record.iv is not None:
            out.append(
                '<table class="nonce"><caption>nonce = iv XOR (0<sup>4</sup> ‖ seq)</caption><tbody>'
                f'<tr><th scope="row">iv {_badge("secret", "secret")}</th>'
                f'<td class="hex secret-value">{record.iv.hex()}</td></tr>'
                f'<tr><th scope="row">0<sup>4</sup> ‖ seq ({record.seq})</th>'
                f'<td class="hex">{padded}</td></tr>'
                f'<tr><th scope="row">nonce {_badge("secret", "secret")}</th>'
                f'<td class="hex secret-value">{record.nonce.hex()}</td></tr>'
                "</tbody></table>"
            )
        else:
            out.append(
                f"<p>nonce = iv XOR (0<sup>4</sup> ‖ seq) = iv XOR <code>{padded}</code>:"
                ' <span class="hidden-value">the iv is secret; a page made with secrets works'
                " it out.</span></p>"
            )
    facts = [
        f"<dt>ciphertext</dt><dd>{record.ciphertext_size} bytes: the content type byte and"
        " the content, encrypted</dd>",
        f"<dt>tag</dt><dd><code>{record.tag.hex() or '(missing)'}</code>: authenticates the"
        " header, seq and ciphertext</dd>",
    ]
    if record.key is not None:
        facts.append(
            f"<dt>key {_badge('secret', 'secret')}</dt>"
            f'<dd><code class="secret-value">{record.key.hex()}</code></dd>'
        )
    if record.plaintext is not None:
        facts.append(
            f"<dt>plaintext ({text(record.content_type)}, {record.plaintext_size} bytes)</dt>"
            f"<dd>{_plaintext(record.plaintext, record.plaintext_size)}</dd>"
        )
    else:
        facts.append('<dt>plaintext</dt><dd class="hidden-value">not opened</dd>')
    if record.diagnosis:
        facts.append(f'<dt>diagnosis</dt><dd class="diagnosis">{text(record.diagnosis)}</dd>')
    out.append(f'<dl class="facts">{"".join(facts)}</dl>')
    return '<div class="record">' + "".join(out) + "</div>"


def _frame(step: Step) -> str:
    badges = _badge("seeded", "seeded") if step.seeded else ""
    if step.kind == "alert":
        badges += _badge("no", "alert")
    leg = f" (leg {step.leg})" if step.leg else ""
    body = []
    if step.note and step.kind != "record":
        cls = "diagnosis" if step.kind in ("alert", "unknown") else ""
        body.append(f'<p class="{cls}">{text(step.note)}</p>')
    body.append(_fields_table(step))
    if step.record is not None:
        body.append(_record_box(step, step.record))
    body.append(f'<p class="back"><a href="#arrow-{step.number}">back to the ladder</a></p>')
    return (
        f'<details class="frame kind-{step.kind}" id="frame-{step.number}">'
        f'<summary><h3><span class="num">{step.number}.</span> {text(step.sender)} →'
        f" {text(step.receiver)}{leg}: {text(step.title)}{badges}</h3></summary>"
        f'<div class="body">{"".join(body)}</div></details>'
    )


def _compact_rows(lines: list[Compact]) -> str:
    return "".join(
        f'<tr><td class="num">{c.number}</td><td>{text(c.sender)} → {text(c.receiver)}</td>'
        f'<td class="num">{"" if c.epoch is None else c.epoch}/{"" if c.seq is None else c.seq}</td>'
        f'<td>{text(c.content_type)}</td><td class="num">{c.size}</td>'
        f"<td>{text(c.preview)}</td></tr>"
        for c in lines
    )


_COMPACT_HEAD = (
    '<thead><tr><th scope="col">frame</th><th scope="col">direction</th>'
    '<th scope="col">epoch/seq</th><th scope="col">type</th><th scope="col">bytes</th>'
    '<th scope="col">plaintext or diagnosis</th></tr></thead>'
)


def _group(group: StepGroup) -> str:
    more = group.count - len(group.lines)
    tail = f"<p>… and {more} more records, counted but not listed.</p>" if more > 0 else ""
    types = ", ".join(f"{n} {t}" for t, n in group.types.items())
    return (
        f'<details class="frame kind-record" id="group-{group.first}">'
        f"<summary><h3>Frames {group.first}–{group.last}: {group.count} records folded"
        f" ({text(types)}; {_size(group.size)}, {_size(group.plaintext)} of plaintext)</h3>"
        '</summary><div class="body"><p>A long run of records, one line each: the first and'
        " last frames of the session are shown whole.</p>"
        f'<div class="scroll" tabindex="0" role="region" aria-label="frames {group.first} to'
        f' {group.last}"><table><caption>Records {group.first}–{group.last}</caption>'
        f"{_COMPACT_HEAD}<tbody>{_compact_rows(group.lines)}</tbody></table></div>{tail}"
        "</div></details>"
    )


def _frames(story: Story) -> str:
    out = [
        f'<section id="frames"><h2>{text(_SECTIONS[2][1])}</h2>',
        "<p>Each frame opens to every byte: offset, field, bytes and what they mean, from the"
        " same annotator as <code>--explain</code>.</p>",
    ]
    for item in story.steps:
        out.append(_frame(item) if isinstance(item, Step) else _group(item))
    out.append("</section>")
    return "".join(out)


def _messages(story: Story) -> str:
    lines: list[str] = []
    for item in story.steps:
        if isinstance(item, StepGroup):
            lines.append(
                f'<tr><td class="num"><a class="to-frame" href="#group-{item.first}">'
                f'{item.first}–{item.last}</a></td><td colspan="5">{text(_group_label(item))}</td></tr>'
            )
            continue
        record = item.record
        if record is None:
            continue
        shown = record.diagnosis or item.note
        if not shown and record.plaintext is not None:
            shown = record.plaintext[:80].decode("utf-8", "replace")
        lines.append(
            f'<tr><td class="num"><a class="to-frame" href="#frame-{item.number}">'
            f"{item.number}</a></td><td>{text(item.sender)} → {text(item.receiver)}</td>"
            f'<td class="num">{"" if record.epoch is None else record.epoch}/'
            f"{'' if record.seq is None else record.seq}</td>"
            f'<td>{text(record.content_type)}</td><td class="num">{item.size}</td>'
            f"<td>{text(shown or 'not opened')}</td></tr>"
        )
    body = (
        f"<table><caption>Every record</caption>{_COMPACT_HEAD}<tbody>{''.join(lines)}</tbody>"
        "</table>"
        if lines
        else "<p>No records crossed.</p>"
    )
    return f'<section id="messages"><h2>{text(_SECTIONS[3][1])}</h2>{body}</section>'


def _value(d: Derivation) -> str:
    if d.value is None:
        return f'<span class="hidden-value">{text(d.why_hidden or "not known")}</span>'
    marks = (_badge("secret", "secret") if d.secret else "") + (
        _badge("seeded", "seeded") if d.seeded else ""
    )
    cls = "hex secret-value" if d.secret else "hex"
    return f'{marks}<pre class="{cls}">{text(hexdump(d.value, len(d.value)))}</pre>'


def _derivation(d: Derivation) -> str:
    facts = []
    if d.label:
        facts.append(f'<dt>label</dt><dd><code>"kexlab {text(d.label)}"</code></dd>')
    if d.context:
        context = text(d.context)
        if d.context_value is not None:
            context += f' = <code class="hex">{text(d.context_value.hex())}</code>'
        facts.append(f"<dt>context</dt><dd>{context}</dd>")
    if d.hkdf_label:
        facts.append(f'<dt>HkdfLabel</dt><dd><code class="hex">{d.hkdf_label.hex()}</code></dd>')
    facts.append(f"<dt>value</dt><dd>{_value(d)}</dd>")
    cls = "derivation seeded" if d.seeded else "derivation"
    return (
        f'<li class="{cls}"><p class="formula"><code class="name">{text(d.name)}</code> = '
        f'{text(d.formula)}</p><dl class="facts">{"".join(facts)}</dl></li>'
    )


def _schedule(story: Story) -> str:
    out = [
        f'<section id="schedule"><h2>{text(_SECTIONS[4][1])}</h2>',
        "<p>docs/protocol.md §5: HKDF with the suite's hash; HKDF-Expand-Label(Secret, Label,"
        ' Context, Length) expands HkdfLabel = u16 Length ‖ "kexlab " Label ‖ Context.'
        " Transcript hashes are public; secret values appear only on a page made with"
        " secrets.</p>",
    ]
    for leg in story.legs:
        title = _leg_title(leg, story)
        if title:
            out.append(f"<h3>{text(title)}</h3>")
        if leg.schedule_note:
            out.append(f'<p class="note">{text(leg.schedule_note)}</p>')
        if not leg.schedule:
            out.append("<p>No key schedule: the handshake did not get as far as keys.</p>")
            continue
        items = "".join(_derivation(d) for d in leg.schedule)
        out.append(
            '<ol class="schedule" aria-label="shared secret, master, traffic secrets, keys and'
            f' ivs">{items}</ol>'
        )
    out.append("</section>")
    return "".join(out)


def _sas(story: Story) -> str:
    out = [f'<section id="sas"><h2>{text(_SECTIONS[5][1])}</h2>']
    for leg in story.legs:
        who = f"{leg.client} ↔ {leg.server}"
        mark = _badge("seeded", "seeded") if story.seed is not None and leg.sas else ""
        if leg.sas:
            out.append(
                f'<p>{text(who)}: <strong class="sas"><code>{text(leg.sas)}</code></strong>{mark}'
                f" ({text(leg.sas_from)})</p>"
            )
        else:
            out.append(f"<p>{text(who)}: {text(leg.sas_from or 'unknown')}</p>")
    if len(story.legs) == 2 and all(leg.sas for leg in story.legs):
        same = story.legs[0].sas == story.legs[1].sas
        out.append(
            "<p><strong>"
            + (
                "The two legs show the same SAS."
                if same
                else "The two legs show different SAS values:"
            )
            + "</strong> "
            + (
                ""
                if same
                else "the client and the server, reading theirs to each other, would hear the"
                " difference and know someone is in the middle."
            )
            + "</p>"
        )
    out.append("</section>")
    return "".join(out)


def _claim(c: Claim) -> str:
    return (
        f"<li><strong>{text(c.topic)}</strong>{_badge(c.holds, c.holds)}: {text(c.sentence)}</li>"
    )


def _claims(story: Story) -> str:
    out = [f'<section id="claims"><h2>{text(_SECTIONS[6][1])}</h2>']
    for leg in story.legs:
        title = _leg_title(leg, story)
        if title:
            out.append(f"<h3>{text(title)}</h3>")
        if leg.claims:
            out.append(f'<ul class="claims">{"".join(_claim(c) for c in leg.claims)}</ul>')
        else:
            out.append("<p>Nothing: the handshake did not complete.</p>")
    out.append("</section>")
    return "".join(out)


def render(story: Story) -> str:
    """The whole page."""
    return (
        '<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">'
        f'<meta http-equiv="Content-Security-Policy" content="{CONTENT_SECURITY_POLICY}">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        '<meta name="referrer" content="no-referrer">'
        f"<title>{text(story.title)}</title><style>{CSS}</style></head><body>"
        f"{_header(story)}{_toc()}<main>{_glance(story)}{_ladder(story)}{_frames(story)}"
        f"{_messages(story)}{_schedule(story)}{_sas(story)}{_claims(story)}</main>"
        "<footer><p>Made by kexlab. This page is one file: it loads nothing from anywhere,"
        " and reads the same without JavaScript; printing opens every frame.</p></footer>"
        f"<script>{SCRIPT}</script></body></html>\n"
    )
