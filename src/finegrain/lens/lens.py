"""The logit lens (nostalgebraist 2020, "interpreting GPT: the logit lens") and direct logit attribution
(Elhage et al. 2021, "A mathematical framework for transformer circuits"; Nanda's TransformerLens).

*Logit lens*: every layer's residual stream ``layer.i`` goes through the model's own final norm and
unembedding (:meth:`HFAdapter.unembed`), giving a next-token (decoders) or masked-token (encoders with an MLM
head) distribution per layer and position. At the last layer this is the model's own output; that is checked
on every call (a model whose head is more than final norm + LM head, e.g. with logit soft-capping, is refused
rather than shown wrong numbers).

*Direct logit attribution* (decoders with pre-norm blocks, GPT-2 and Llama style): the final residual at a
position is the sum of the embedding (``layer.0``) and every block's attention and MLP outputs; each piece is
projected on the target token's unembedding direction ``W_U[target]`` (minus ``W_U[against]`` for a logit
difference). Convention: the final norm is linearised with its scale *frozen* at the value it takes on the
full residual: for LayerNorm ``LN(x) = gamma * (x - mean(x)) / sigma + beta`` with ``sigma`` computed on the
full ``x``, so a component ``c`` contributes ``W_U[t] . (gamma * (c - mean(c)) / sigma)`` (centering is linear,
so each component is centred by its own mean); for RMSNorm ``c * gamma / rms(x)``. Each head's term comes from
its slice of the attention output projection; the projection's bias is reported as its own term. What is left
is the constant ``W_U[t] . beta + b_U[t]`` (the norm's bias and the unembedding's bias). Components + constant
equal the model's logit (checked on every call).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
from torch import nn

from finegrain.errors import ModelError, ParameterError
from finegrain.models.base import ModelAdapter, preserved_state
from finegrain.patching.metric import output_logits, read_position, token_text, vocab_id
from finegrain.results import Result, ResultList

_TOL = 1e-3  # tolerated |difference| (relative to the logits' scale) between a decomposition and the model


def _require_hf(adapter: ModelAdapter, what: str) -> None:
    if not hasattr(adapter, "unembed"):
        raise ModelError(f"{what} needs a transformer language model (an HFAdapter); {adapter.name} is a "
                         f"{adapter.kind} model")


def _texts(text) -> tuple[list, bool]:
    if isinstance(text, str):
        return [text], True
    texts = list(text)
    if not texts:
        raise ParameterError("no text given")
    return texts, False


_HEAD = "this model's head is not the final norm followed by the LM head that finegrain found"


def _check_close(what: str, got: torch.Tensor, want: torch.Tensor, name: str, why: str = _HEAD) -> float:
    """The largest |got - want|; a ModelError (``why``) when it is beyond float noise: finegrain refuses to
    show a decomposition that does not add up to what the model computes."""
    diff = float((got.double() - want.double()).abs().max())
    scale = 1.0 + float(want.double().abs().max())
    if diff > _TOL * scale:
        raise ModelError(f"{name}: {what} differs from the model's own output by {diff:.3g}; {why}")
    return diff


# ---------------------------------------------------------------------------------------------
@dataclass
class LogitLensResult(Result):
    """Per layer and position: the top-``k`` tokens of the lens distribution with their probabilities, and the
    target token's probability and rank (1 = top). ``final_max_abs_diff``: the largest difference between the
    lens at the last layer and the model's own logits (checked to be ~0)."""

    kind = "logit-lens"
    model: str = ""
    text: str = ""
    tokens: list[str] = field(default_factory=list)
    layers: list[str] = field(default_factory=list)
    k: int = 5
    top_tokens: list[list[list[str]]] = field(default_factory=list)
    top_ids: list[list[list[int]]] = field(default_factory=list)
    top_probs: list[list[list[float]]] = field(default_factory=list)
    target: str | None = None
    target_id: int | None = None
    target_probs: list[list[float]] | None = None
    target_ranks: list[list[int]] | None = None
    final_max_abs_diff: float = 0.0
    norm: str = ""
    position: int = -1

    def table(self) -> str:
        p = self.position
        lines = [f"logit lens of {self.model} (final norm: {self.norm}) at position {p} {self.tokens[p]!r} "
                 f"of {self.text!r}"]
        for li, layer in enumerate(self.layers):
            top = ", ".join(f"{t!r} {pr:.3f}" for t, pr in zip(self.top_tokens[li][p], self.top_probs[li][p]))
            tgt = ""
            if self.target_probs is not None:
                tgt = f"  | {self.target!r}: rank {self.target_ranks[li][p]}, p {self.target_probs[li][p]:.4f}"
            lines.append(f"  {layer:<9} {top}{tgt}")
        lines.append(f"last layer vs the model's logits: max |diff| {self.final_max_abs_diff:.2e}")
        return "\n".join(lines)

    def plot(self, path):
        from finegrain.viz.lens import plot_token_grid  # heavy: matplotlib, imported when a picture is drawn

        top1 = [[ts[0] for ts in row] for row in self.top_tokens]
        if self.target_probs is not None:
            values, label = self.target_probs, f"p({self.target!r})"
        else:
            values, label = [[ps[0] for ps in row] for row in self.top_probs], "top-1 probability"
        return plot_token_grid(values, top1, self.layers, [f"{i}:{t}" for i, t in enumerate(self.tokens)], path,
                               title=f"logit lens: top-1 token per layer ({self.model})", colorbar_label=label)


def logit_lens(adapter: ModelAdapter, text: str | Sequence[str], target: str | int | None = None, k: int = 5,
               position: int | None = None) -> LogitLensResult | ResultList:
    """The logit lens of a text (nostalgebraist 2020): each residual layer ``layer.0 .. layer.n`` through the final
    norm and the LM head; one text gives one result, a list a :class:`ResultList`. ``target`` (a vocabulary item
    or id) adds its probability and rank per layer and position; ``position`` picks the position the table shows
    (default: the last token, or the mask token of a masked LM; the plot shows all)."""
    _require_hf(adapter, "the logit lens")
    if not isinstance(k, int) or k < 1:
        raise ParameterError(f"k must be a positive int, got {k!r}")
    texts, one = _texts(text)
    res = [_lens_one(adapter, t, target, k, position) for t in texts]
    return res[0] if one else ResultList(res)


def _lens_one(adapter, text: str, target, k: int, position: int | None) -> LogitLensResult:
    batch = adapter.encode([text.split()])
    position = read_position(adapter, batch, position)
    layers = adapter.hidden_layers()
    tid = None if target is None else vocab_id(adapter, target)
    tops, top_ids, top_probs, t_probs, t_ranks = [], [], [], [], []
    with preserved_state(adapter.model), torch.no_grad():
        adapter.model.eval()
        out, cache = adapter.run_with_cache(batch, layers)
        own = output_logits(adapter, out)[0]
        if own.dim() != 2:
            raise ModelError(f"{adapter.name} does not predict tokens (its logits have shape {tuple(own.shape)})")
        kk = min(k, own.shape[-1])
        diff = 0.0
        for li, layer in enumerate(layers):
            logits = adapter.unembed(cache[layer])[0]
            if li == len(layers) - 1:
                diff = _check_close("the logit lens at the last layer", logits, own, adapter.name)
            probs = torch.softmax(logits.double(), -1)
            p, ids = probs.topk(kk, -1)
            top_ids.append(ids.tolist())
            top_probs.append(p.tolist())
            tops.append([[token_text(adapter, i) for i in row] for row in ids.tolist()])
            if tid is not None:
                pt = probs[:, tid]
                t_probs.append(pt.tolist())
                t_ranks.append((1 + (probs > pt[:, None]).sum(-1)).tolist())
    norm = adapter.final_norm()
    return LogitLensResult(
        model=adapter.name, text=text, tokens=list(batch.tokens[0]), layers=layers, k=kk, top_tokens=tops,
        top_ids=top_ids, top_probs=top_probs, target=None if tid is None else token_text(adapter, tid),
        target_id=tid, target_probs=t_probs or None, target_ranks=t_ranks or None, final_max_abs_diff=diff,
        norm="none" if norm is None else type(norm).__name__, position=position,
    )


# ---------------------------------------------------------------------------------------------
@dataclass
class DLAResult(Result):
    """Direct logit attribution of one position: ``components`` (``embed``, then ``layer.i.attn`` and
    ``layer.i.mlp`` per block) with their ``values``; ``heads[i][h]`` the terms of block i+1's heads and
    ``attn_bias[i]`` its output projection's bias term (heads + bias = the block's attention term);
    ``constant`` the final norm's bias and the unembedding bias; ``total`` = sum of components + constant;
    ``logit`` the model's own logit (difference), which ``total`` matches."""

    kind = "direct-logit-attribution"
    model: str = ""
    text: str = ""
    tokens: list[str] = field(default_factory=list)
    position: int = -1
    target: str = ""
    against: str | None = None
    components: list[str] = field(default_factory=list)
    values: list[float] = field(default_factory=list)
    heads: list[list[float]] = field(default_factory=list)
    attn_bias: list[float] = field(default_factory=list)
    constant: float = 0.0
    total: float = 0.0
    logit: float = 0.0
    norm: str = ""
    convention: str = ""

    def table(self) -> str:
        what = f"logit({self.target!r})" + (f" - logit({self.against!r})" if self.against is not None else "")
        lines = [f"direct logit attribution of {what} at position {self.position} {self.tokens[self.position]!r} "
                 f"of {self.text!r} ({self.model})", f"  convention: {self.convention}"]
        w = max(len(c) for c in self.components)
        for c, v in zip(self.components, self.values):
            lines.append(f"  {c:<{w}}  {v:+.4f}")
        if self.heads:
            lines.append("  heads (rows: blocks, columns: heads; + bias = the attention term):")
            for i, (row, b) in enumerate(zip(self.heads, self.attn_bias)):
                lines.append(f"    layer.{i + 1}.attn  " + " ".join(f"{v:+.3f}" for v in row) + f"  bias {b:+.3f}")
        lines.append(f"  constant (norm bias . W_U + b_U)  {self.constant:+.4f}")
        lines.append(f"  sum {self.total:+.4f}  vs the model's logit {self.logit:+.4f}")
        return "\n".join(lines)

    def plot(self, path):
        from finegrain.viz.lens import plot_dla  # heavy: matplotlib, imported when a picture is drawn

        return plot_dla(self.components, self.values, self.heads, path,
                        title=f"direct logit attribution ({self.model})")


def direct_logit_attribution(adapter: ModelAdapter, text: str | Sequence[str], target: str | int,
                             against: str | int | None = None, position: int | None = None
                             ) -> DLAResult | ResultList:
    """Direct logit attribution of ``target`` (minus ``against``) at ``position`` (default: the last token) to
    the embedding, every block's attention (and each head) and MLP output, through the final norm with its scale
    frozen (see the module docstring; Elhage et al. 2021). Decoders with pre-norm blocks only: an encoder's
    post-norm blocks (BERT) do not write a sum into a residual stream, and its MLM head is nonlinear."""
    _require_hf(adapter, "direct logit attribution")
    texts, one = _texts(text)
    res = [_dla_one(adapter, t, target, against, position) for t in texts]
    return res[0] if one else ResultList(res)


def _norm_parts(norm: nn.Module | None, x: torch.Tensor, name: str):
    """``(center, scale [D], offset [D] or None)`` such that ``norm(x) = scale * center(x) + offset``, with the
    scale frozen on ``x`` (float64); the formula is checked against the module itself."""
    D = x.shape[-1]
    if norm is None:
        return False, torch.ones(D, dtype=torch.float64), None
    w = getattr(norm, "weight", None)
    gamma = torch.ones(D, dtype=torch.float64) if w is None else w.detach().double().cpu()
    b = getattr(norm, "bias", None)
    beta = None if b is None else b.detach().double().cpu()
    eps = getattr(norm, "eps", None)
    eps = getattr(norm, "variance_epsilon", 1e-6) if eps is None else eps
    xd = x.double().cpu()
    if isinstance(norm, nn.LayerNorm) or "layernorm" in type(norm).__name__.lower():
        center, sigma = True, torch.sqrt(xd.var(unbiased=False) + eps)
        want = (xd - xd.mean()) / sigma * gamma + (0 if beta is None else beta)
    elif "rms" in type(norm).__name__.lower():
        center, sigma = False, torch.sqrt((xd * xd).mean() + eps)
        want = xd / sigma * gamma + (0 if beta is None else beta)
    else:
        raise ModelError(f"{name}: direct logit attribution supports LayerNorm and RMSNorm final norms, "
                         f"not {type(norm).__name__}")
    with torch.no_grad():
        got = norm(x[None])[0]
    _check_close(f"the frozen-scale form of {type(norm).__name__}", want, got.double().cpu(), name,
                 "its final norm is neither a LayerNorm nor an RMSNorm of the usual form")
    return center, gamma / sigma, beta


def _dla_one(adapter, text: str, target, against, position) -> DLAResult:
    batch = adapter.encode([text.split()])
    n = adapter.n_layers
    sizes = adapter.layers()
    missing = [f"layer.{i}.{c}" for i in range(1, n + 1) for c in ("attn", "mlp") if f"layer.{i}.{c}" not in sizes]
    if missing:
        raise ModelError(f"{adapter.name}: direct logit attribution needs every block's attn and mlp hook points; "
                         f"missing {missing}")
    W_U, b_U = adapter.unembedding()
    comps = [f"layer.{i}.{c}" for i in range(1, n + 1) for c in ("attn", "mlp")]
    with preserved_state(adapter.model), torch.no_grad():
        adapter.model.eval()
        out, cache = adapter.run_with_cache(batch, ["layer.0", f"layer.{n}", *comps])
        pos = read_position(adapter, batch, position)
        own = output_logits(adapter, out)[0, pos].double().cpu()
        x = cache[f"layer.{n}"][0, pos]
        pieces: dict[str, torch.Tensor] = {"embed": cache["layer.0"][0, pos].double().cpu()}
        heads, biases = [], []
        for i in range(1, n + 1):
            for c in ("attn", "mlp"):
                lay = f"layer.{i}.{c}"
                W, b = adapter.output_projection(lay)
                W, a = W.detach().double().cpu(), cache[lay][0, pos].double().cpu()
                pieces[lay] = a @ W + (0 if b is None else b.detach().double().cpu())
                if c == "attn":
                    H, d = adapter.heads(lay)
                    heads.append([a[h * d:(h + 1) * d] @ W[h * d:(h + 1) * d] for h in range(H)])
                    biases.append(torch.zeros(W.shape[1], dtype=torch.float64) if b is None
                                  else b.detach().double().cpu())
        resid = sum(pieces.values())
        _check_close("the sum of the embedding and all attention and MLP outputs", resid, x.double().cpu(),
                     adapter.name, "direct logit attribution needs pre-norm residual blocks (GPT-2, Llama), "
                     "whose outputs add up to the final residual")
        center, scale, beta = _norm_parts(adapter.final_norm(), x, adapter.name)
        t = vocab_id(adapter, target)
        a_id = None if against is None else vocab_id(adapter, against)
        U = W_U.detach().double().cpu()
        u = U[t] - (U[a_id] if a_id is not None else 0)
        bias = 0.0 if b_U is None else float(b_U[t] - (b_U[a_id] if a_id is not None else 0))

        def term(c: torch.Tensor) -> float:
            return float(((c - c.mean() if center else c) * scale) @ u)

        values = [term(v) for v in pieces.values()]
        head_vals = [[term(h) for h in row] for row in heads]
        bias_vals = [term(b) for b in biases]
        constant = (0.0 if beta is None else float(beta @ u)) + bias
    total = sum(values) + constant
    logit = float(own[t] - (own[a_id] if a_id is not None else 0))
    if abs(total - logit) > _TOL * (1 + abs(logit)):
        raise ModelError(f"{adapter.name}: direct logit attribution sums to {total:.5g}, the model's logit is "
                         f"{logit:.5g}; its head is not final norm + linear unembedding")
    norm = adapter.final_norm()
    nname = "none" if norm is None else type(norm).__name__
    conv = (f"final norm ({nname}) scale frozen at its value on the full residual; each component "
            f"{'centred by its own mean, ' if center else ''}times gamma / sigma, dotted with W_U[target]"
            f"{' - W_U[against]' if a_id is not None else ''}; constant = beta . u + b_U")
    return DLAResult(
        model=adapter.name, text=text, tokens=list(batch.tokens[0]), position=pos, target=token_text(adapter, t),
        against=None if a_id is None else token_text(adapter, a_id), components=list(pieces), values=values,
        heads=head_vals, attn_bias=bias_vals, constant=constant, total=total, logit=logit, norm=nname,
        convention=conv,
    )
