"""Whisper's greedy decoding as one fixed-shape step over preallocated key/value buffers.

transformers' ``generate`` grows its cache a token at a time and runs a stack of Python logits processors
per step: on an H200 its decoder loop was launch-bound (5.9-7.1 ms a token at batch 64, issue #32).  Here
one step is a plain function of fixed shapes (the self-attention cache is ``prompt + max_new_tokens`` long
and masked past the current position; the cross-attention keys and values are computed once per batch),
so ``torch.compile`` builds it once per batch and window size instead of once per length.  Whisper's own
confidence is taken on the way: the log-probability of each chosen token, and the odds of the first step
after <|startoftranscript|>; no teacher-forced pass is needed afterwards.

The step mirrors ``WhisperDecoderLayer`` of transformers 5 (pre-norm self-attention, cross-attention,
GELU MLP; queries scaled before the product; no embedding scale); a test holds its tokens and scores equal
to ``generate``'s, so a transformers release that changes the layer fails there, not in a night.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

log = logging.getLogger(__name__)


def decoder_step(dec, proj, tok, pos, self_k, self_v, cross_k, cross_v):
    """Logits (batch, vocab) for the token after ``tok`` (batch,) at position ``pos`` (a 0-d tensor), writing
    this position's keys and values into ``self_k``/``self_v`` (per layer: batch, heads, length, head dim)."""
    import torch
    import torch.nn.functional as F

    b = tok.shape[0]
    at = pos.view(1)
    h = dec.embed_tokens(tok).unsqueeze(1) + dec.embed_positions.weight.index_select(0, at).unsqueeze(0)
    length = self_k[0].shape[2]
    seen = (torch.arange(length, device=tok.device) <= pos).view(1, 1, 1, length)
    for i, layer in enumerate(dec.layers):
        a, c = layer.self_attn, layer.encoder_attn
        heads, dim = a.num_heads, a.head_dim
        x = layer.self_attn_layer_norm(h)
        q = (a.q_proj(x) * a.scaling).view(b, 1, heads, dim).transpose(1, 2)
        self_k[i].index_copy_(2, at, a.k_proj(x).view(b, 1, heads, dim).transpose(1, 2))
        self_v[i].index_copy_(2, at, a.v_proj(x).view(b, 1, heads, dim).transpose(1, 2))
        o = F.scaled_dot_product_attention(q, self_k[i], self_v[i], attn_mask=seen, scale=1.0)
        h = h + a.out_proj(o.transpose(1, 2).reshape(b, 1, -1))
        x = layer.encoder_attn_layer_norm(h)
        q = (c.q_proj(x) * c.scaling).view(b, 1, heads, dim).transpose(1, 2)
        o = F.scaled_dot_product_attention(q, cross_k[i], cross_v[i], scale=1.0)
        h = h + c.out_proj(o.transpose(1, 2).reshape(b, 1, -1))
        h = h + layer.fc2(layer.activation_fn(layer.fc1(layer.final_layer_norm(h))))
    return F.linear(dec.layer_norm(h)[:, 0], proj)


@dataclass
class Greedy:
    """A batch's greedy decode: each row's text tokens (with <|endoftext|> when it stopped), the summed
    log-probability of those tokens under Whisper's token filters, and the first step's probabilities."""

    text: list[list[int]]
    stopped: list[bool]
    logprob_sum: list[float]
    first: object  # (batch, vocab) softmax of the step after <|startoftranscript|>, unfiltered


class StaticDecoder:
    """Greedy decoding of a ``WhisperForConditionalGeneration`` with a fixed-length cache; ``compile`` puts
    the step under ``torch.compile`` (falling back to eager, with a log line, on any failure)."""

    def __init__(self, model, max_new_tokens: int, compile: bool = False):
        self.dec = model.model.decoder
        self.proj = model.get_output_embeddings().weight
        gen = model.generation_config
        self.eos = gen.eos_token_id
        self.suppress = list(gen.suppress_tokens or [])
        self.begin_suppress = list(gen.begin_suppress_tokens or [])
        self.min_new_tokens = gen.min_new_tokens or 0
        self.max_new_tokens = max_new_tokens
        self._step = decoder_step
        self.compiled = False
        if compile:
            try:
                import torch

                self._step = torch.compile(decoder_step, dynamic=True)
                self.compiled = True
            except Exception as exc:
                log.warning(
                    "compiling Whisper's decoder step failed, running it eager: %s: %s", type(exc).__name__, exc
                )

    def step(self, *args):
        if self.compiled:
            try:
                return self._step(self.dec, self.proj, *args)
            except Exception as exc:  # an op or shape inductor cannot take: eager from now on
                log.warning("compiled decoder step failed, running it eager from now: %s: %s", type(exc).__name__, exc)
                self._step, self.compiled = decoder_step, False
        return decoder_step(self.dec, self.proj, *args)

    def cross(self, hidden):
        """Each layer's cross-attention keys and values of the encoder output, once per batch."""
        b, t, _ = hidden.shape
        ks, vs = [], []
        for layer in self.dec.layers:
            c = layer.encoder_attn
            ks.append(c.k_proj(hidden).view(b, t, c.num_heads, c.head_dim).transpose(1, 2).contiguous())
            vs.append(c.v_proj(hidden).view(b, t, c.num_heads, c.head_dim).transpose(1, 2).contiguous())
        return ks, vs

    def decode(self, hidden, sot: int, prompt_rest) -> Greedy:
        """``hidden``: the encoder output (batch, frames/2, d_model).  ``prompt_rest(first)`` returns the
        prompt after <|startoftranscript|> (batch, n) as a long tensor, given the first step's
        probabilities (so a detected language can go into it)."""
        import torch

        b, device = hidden.shape[0], hidden.device
        a = self.dec.layers[0].self_attn
        first_tok = torch.full((b,), sot, dtype=torch.long, device=device)
        cross_k, cross_v = self.cross(hidden)
        # The prompt's length is known only after the first step; 4 covers every Whisper prompt.
        length = min(4 + self.max_new_tokens, self.dec.embed_positions.weight.shape[0])
        shape = (b, a.num_heads, length, a.head_dim)
        self_k = [torch.zeros(shape, dtype=hidden.dtype, device=device) for _ in self.dec.layers]
        self_v = [torch.zeros(shape, dtype=hidden.dtype, device=device) for _ in self.dec.layers]
        pos = torch.zeros((), dtype=torch.long, device=device)

        def step(tok):
            logits = self.step(tok, pos, self_k, self_v, cross_k, cross_v).float()
            pos.add_(1)
            return logits

        logits = step(first_tok)
        first = logits.softmax(dim=-1)
        rest = prompt_rest(first).to(device)
        for j in range(rest.shape[1]):
            logits = step(rest[:, j])
        steps = min(self.max_new_tokens, length - 1 - rest.shape[1])
        out = torch.full((b, steps), self.eos, dtype=torch.long, device=device)
        done = torch.zeros(b, dtype=torch.bool, device=device)
        total = torch.zeros(b, dtype=torch.float32, device=device)
        n = 0
        for t in range(steps):
            # generate's processors: suppress_tokens always, begin_suppress_tokens at the first text token,
            # no <|endoftext|> before min_new_tokens.
            if self.suppress:
                logits[:, self.suppress] = -float("inf")
            if t == 0 and self.begin_suppress:
                logits[:, self.begin_suppress] = -float("inf")
            if t < self.min_new_tokens:
                logits[:, self.eos] = -float("inf")
            nxt = logits.argmax(dim=-1)
            lp = logits.log_softmax(dim=-1).gather(1, nxt.unsqueeze(1)).squeeze(1)
            total += torch.where(done, 0.0, lp)
            nxt = torch.where(done, self.eos, nxt)
            out[:, t] = nxt
            done |= nxt == self.eos
            n = t + 1
            # One host sync every few steps: each is a stall of the GPU's queue.
            if (t % 4 == 3 and bool(done.all())) or t == steps - 1:
                break
            logits = step(nxt)
        rows = out[:, :n].cpu().tolist()
        text, stopped = [], []
        for row in rows:
            k = row.index(self.eos) if self.eos in row else len(row)
            text.append(row[:k])
            stopped.append(k < len(row))
        return Greedy(text=text, stopped=stopped, logprob_sum=total.cpu().tolist(), first=first)
