"""Whisper through transformers (``AutoModelForSpeechSeq2Seq``), runnable without Ray: log-mel features in,
each clip's token ids and Whisper's own confidence out.  ``pipeline/stages/transcribe.py`` calls it."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

import numpy as np

from pipeline.engines.static_decoder import StaticDecoder
from pipeline.engines.whisper import checkpoint_language
from pipeline.engines.windows import FULL_WINDOW_S, frames

log = logging.getLogger(__name__)


@dataclass
class Decoded:
    """One clip: its token ids (prompt, text, end of text), and Whisper's confidence in them."""

    tokens: list[int]
    avg_logprob: float
    no_speech_prob: float | None = None
    language: str | None = None  # the language the model hears most (multilingual models)
    language_prob: float | None = None


def encoder_forward(encoder, x):
    """``WhisperEncoder.forward`` over any window up to 30 s: the library's refuses all but 3,000 frames.
    Positions are sliced to the window, as whisper.cpp's ``audio_ctx`` does; at 3,000 frames this is the
    library's own computation (a unit test holds the two equal)."""
    import torch.nn.functional as F

    h = F.gelu(encoder.conv1(x))
    h = F.gelu(encoder.conv2(h)).permute(0, 2, 1)
    h = h + encoder.embed_positions.weight[: h.shape[1]]
    for layer in encoder.layers:
        h = layer(h, None)
    return encoder.layer_norm(h)


class HFWhisper:
    """Greedy decoding of the features, and Whisper's own confidence: the mean token log-probability, and,
    from the decoder step at the start-of-transcript token (as Whisper itself does), the probability of
    "no speech" and, for multilingual models, of each language.  ``decoder="static"`` takes them on the way
    (``static_decoder.py``); ``"generate"`` runs transformers' loop and then one teacher-forced pass.
    """

    def __init__(
        self,
        model_path: str,
        device: str,
        dtype: str,
        language: str | None,
        max_new_tokens: int,
        compile_encoder: bool = False,
        windows_s: tuple[float, ...] = (FULL_WINDOW_S,),
        decoder: str = "generate",
        compile_decoder: bool = False,
    ):
        import torch
        from transformers import AutoModelForSpeechSeq2Seq

        self.torch = torch
        self.device = device
        self.dtype = getattr(torch, dtype)
        self.max_new_tokens = max_new_tokens
        self.model = AutoModelForSpeechSeq2Seq.from_pretrained(model_path, dtype=self.dtype, low_cpu_mem_usage=True).to(
            device
        )
        self.model.eval()
        self.n_mels = self.model.config.num_mel_bins
        gen = self.model.generation_config
        self.multilingual = bool(getattr(gen, "is_multilingual", False))
        self.sot = self.model.config.decoder_start_token_id
        # Whisper's "no speech" token sits just before <|notimestamps|> in every checkpoint's vocabulary.
        self.no_speech = gen.no_timestamps_token_id - 1 if getattr(gen, "no_timestamps_token_id", None) else None
        lang_ids = getattr(gen, "lang_to_id", None) or {}
        self.lang_tokens = {tok[2:-2]: i for tok, i in lang_ids.items()} if self.multilingual else {}
        self.language = self.decodable(language)
        self.encoder = self.model.get_encoder()
        self._encode = None
        self.compiled = False
        self.warmup_s = 0.0
        if compile_encoder:
            self._compile(windows_s)
        # "static": pipeline/engines/static_decoder.py's greedy loop, confidence taken on the way.
        self.static = None
        if decoder == "static":
            self.static = StaticDecoder(self.model, max_new_tokens, compile=compile_decoder)
            if self.static.compiled:
                self._warm_decoder(windows_s)

    def _compile(self, windows_s: tuple[float, ...]) -> None:
        """The encoder under ``torch.compile``, one graph per window (the batch dimension dynamic), the usual
        windows warmed up here so no batch pays for them (another window compiles on its first use).
        Inductor keeps its compiled code in its cache folder (``TORCHINDUCTOR_CACHE_DIR``), so an actor
        restarted on the same node loads it instead of compiling.  Any failure (no C++ compiler, an
        unsupported op) leaves the encoder eager, with a log line."""
        torch = self.torch
        t0 = time.perf_counter()
        try:
            compiled = torch.compile(lambda x: encoder_forward(self.encoder, x), dynamic=False)
            with torch.inference_mode():
                for w in sorted(set(windows_s)):
                    x = torch.zeros(2, self.n_mels, frames(w), device=self.device, dtype=self.dtype)
                    torch._dynamo.mark_dynamic(x, 0)
                    compiled(x)
        except Exception as exc:
            log.warning("compiling Whisper's encoder failed, running it eager: %s: %s", type(exc).__name__, exc)
            return
        self._encode, self.compiled = compiled, True
        self.warmup_s = time.perf_counter() - t0
        log.info("Whisper's encoder compiled for windows %s s in %.1f s", sorted(set(windows_s)), self.warmup_s)

    def _warm_decoder(self, windows_s: tuple[float, ...]) -> None:
        """One small batch through the compiled decoder step, so its compile is paid at actor start."""
        t0 = time.perf_counter()
        with self.torch.inference_mode():
            self.transcribe(np.zeros((2, self.n_mels, frames(min(windows_s))), np.float32), [self.language] * 2)
        self.warmup_s += time.perf_counter() - t0
        log.info(
            "Whisper's decoder step compiled in %.1f s (compiled: %s)", time.perf_counter() - t0, self.static.compiled
        )

    def encode(self, x):
        """The encoder's output for ``x`` (clips, mels, frames), any window up to 30 s."""
        from transformers.modeling_outputs import BaseModelOutput

        if self._encode is not None:
            try:
                self.torch._dynamo.mark_dynamic(x, 0)
                return BaseModelOutput(last_hidden_state=self._encode(x))
            except Exception as exc:  # a shape or op the warm-up did not see
                log.warning("compiled encoder failed, running it eager from now: %s: %s", type(exc).__name__, exc)
                self._encode, self.compiled = None, False
        if x.shape[-1] == frames(FULL_WINDOW_S):
            return self.encoder(x)
        return BaseModelOutput(last_hidden_state=encoder_forward(self.encoder, x))

    def decodable(self, language: str | None) -> str | None:
        """The language this checkpoint decodes ``language`` as (``checkpoint_language``)."""
        return checkpoint_language(language, self.lang_tokens) if self.lang_tokens else language

    def prompt(self, lang: str | None) -> list[int]:
        """The decoder prompt ``generate`` forces: <|startoftranscript|> [language, task] <|notimestamps|>."""
        gen = self.model.generation_config
        ids = [self.sot]
        if self.multilingual:
            ids += [gen.lang_to_id[f"<|{lang or self.language or 'en'}|>"], gen.task_to_id["transcribe"]]
        if getattr(gen, "no_timestamps_token_id", None) is not None:
            ids.append(gen.no_timestamps_token_id)
        return ids

    def detect(self, encoded) -> list[str]:
        """The most likely language of each row, from the first decoder step after <|startoftranscript|>."""
        n = encoded.last_hidden_state.shape[0]
        ids = self.torch.full((n, 1), self.sot, dtype=self.torch.long, device=self.device)
        logits = self.model(encoder_outputs=encoded, decoder_input_ids=ids).logits[:, 0].float()
        names, token_ids = list(self.lang_tokens), list(self.lang_tokens.values())
        return [names[int(k)] for k in logits[:, token_ids].argmax(dim=-1).tolist()]

    def generate(self, encoded, langs: list[str | None]):
        """Token ids of each row's text, neither prompt nor end of text (``generate``'s plain output)."""
        kwargs: dict = {"max_new_tokens": self.max_new_tokens}
        if self.multilingual:
            default = self.language or "en"
            kwargs.update(language=[lang or default for lang in langs], task="transcribe")
        # No return_dict_in_generate/output_scores: on an H200 they tripled generate's time at batch 16
        # and made it 9x at batch 64 (bench/gpu_check.py); one teacher-forced pass gives the same numbers.
        return self.model.generate(encoder_outputs=encoded, **kwargs)

    def text_ids(self, row: list[int], prompt: list[int]) -> list[int]:
        """``row`` as ``generate`` returned it, without the prompt (some versions keep it) or padding."""
        gen = self.model.generation_config
        if row[: len(prompt)] == prompt:
            row = row[len(prompt) :]
        end = len(row)
        while end > 0 and row[end - 1] in (gen.eos_token_id, gen.pad_token_id):
            end -= 1
        return row[:end]

    def score(self, encoded, sequences: list[list[int]], prompt_len: list[int]):
        """One decoder pass over prompt + text + end of text: each row's summed log-probability of its
        generated tokens under Whisper's own token filters (as generate's normalised scores), and the raw
        odds of the first step after <|startoftranscript|> (no speech, language), as Whisper computes them.
        Whole-batch tensor work: no Python per row or per token, so a GPU is not left waiting on launches."""
        torch = self.torch
        gen = self.model.generation_config
        n, width = len(sequences), max(len(s) for s in sequences)
        ids = np.full((n, width), gen.pad_token_id, dtype=np.int64)
        for j, seq in enumerate(sequences):
            ids[j, : len(seq)] = seq
        ids = torch.from_numpy(ids).to(self.device)
        logits = self.model(encoder_outputs=encoded, decoder_input_ids=ids[:, :-1]).logits.float()
        first = logits[:, 0].softmax(dim=-1)
        if gen.suppress_tokens:
            logits[..., list(gen.suppress_tokens)] = -float("inf")
        # Step s predicts token s + 1; a row's text starts at its prompt's end and runs to its last token.
        steps = torch.arange(width - 1, device=self.device).unsqueeze(0)
        start = torch.tensor(prompt_len, device=self.device).unsqueeze(1) - 1
        end = torch.tensor([len(s) for s in sequences], device=self.device).unsqueeze(1) - 1
        if gen.begin_suppress_tokens:
            begin = list(gen.begin_suppress_tokens)
            logits[:, :, begin] = logits[:, :, begin].masked_fill((steps == start).unsqueeze(2), -float("inf"))
        lp = logits.gather(2, ids[:, 1:].unsqueeze(2)).squeeze(2) - logits.logsumexp(dim=-1)
        keep = (steps >= start) & (steps < end) & torch.isfinite(lp)
        return torch.where(keep, lp, 0.0).sum(dim=1), first

    def to_device(self, features: np.ndarray):
        """One contiguous tensor for the batch, through pinned memory to a GPU (an asynchronous copy)."""
        x = self.torch.from_numpy(np.ascontiguousarray(features, dtype=np.float32))
        if self.device.startswith("cuda"):
            return x.pin_memory().to(self.device, self.dtype, non_blocking=True)
        return x.to(self.device, self.dtype)

    def transcribe(self, features: np.ndarray, langs: list[str | None]) -> list[Decoded]:
        """``features``: (clips, mels, frames) log-mel, any window up to 30 s (``frames`` a multiple of
        100 per second); ``langs``: each clip's language, or None to detect it."""
        x = self.to_device(features.reshape(len(langs), self.n_mels, -1))
        langs = [self.decodable(lang) for lang in langs]
        with self.torch.inference_mode():
            # The encoder is a large share of the cost on a GPU: run it once for both passes.
            encoded = self.encode(x)
            if self.static is not None:
                sequences, n_text, sums, probs = self._decode_static(encoded, langs)
            else:
                sequences, n_text, sums, probs = self._decode_generate(encoded, langs)
            sums, probs = sums.tolist(), probs.float().cpu()
        out = []
        for j, seq in enumerate(sequences):
            # Whisper's avg_logprob: summed over the text and <|endoftext|>, over len(text) + 1.
            d = Decoded(tokens=seq, avg_logprob=float(sums[j]) / (n_text[j] + 1))
            if self.no_speech is not None:
                d.no_speech_prob = float(probs[j, self.no_speech])
            if self.lang_tokens:
                p = probs[j, list(self.lang_tokens.values())]
                best = int(p.argmax())
                d.language, d.language_prob = list(self.lang_tokens)[best], float(p[best] / p.sum())
            out.append(d)
        return out

    def _decode_generate(self, encoded, langs: list[str | None]):
        """``generate``, then one teacher-forced pass for the confidence."""
        eot = self.model.generation_config.eos_token_id
        if self.lang_tokens and not all(langs):
            # Not forced: decode the language the model hears (one decoder step, as Whisper does).
            heard = self.detect(encoded)
            langs = [lang or h for lang, h in zip(langs, heard, strict=True)]
        generated = self.generate(encoded, langs).cpu().tolist()
        prompts = [self.prompt(lang) for lang in langs]
        sequences, n_text = [], []
        for j, row in enumerate(generated):
            text = self.text_ids(row, prompts[j])
            # Stopped before the cap means it produced <|endoftext|>, which Whisper counts.
            stop = [eot] if len(text) < self.max_new_tokens else []
            sequences.append(prompts[j] + text + stop)
            n_text.append(len(text))
        sums, probs = self.score(encoded, sequences, [len(p) for p in prompts])
        return sequences, n_text, sums, probs

    def _decode_static(self, encoded, langs: list[str | None]):
        """The static-cache greedy loop; the language, where not forced, from its first step's odds."""
        names, lang_ids = list(self.lang_tokens), list(self.lang_tokens.values())
        prompts: list[list[int]] = []

        def prompt_rest(first):
            heard = [None] * len(langs)
            if self.lang_tokens and not all(langs):
                heard = [names[int(k)] for k in first[:, lang_ids].argmax(dim=-1).tolist()]
            prompts.extend(self.prompt(lang or h) for lang, h in zip(langs, heard, strict=True))
            return self.torch.tensor([p[1:] for p in prompts], dtype=self.torch.long)

        g = self.static.decode(encoded.last_hidden_state, self.sot, prompt_rest)
        eot = self.model.generation_config.eos_token_id
        sequences = [p + t + ([eot] if s else []) for p, t, s in zip(prompts, g.text, g.stopped, strict=True)]
        return sequences, [len(t) for t in g.text], self.torch.tensor(g.logprob_sum), g.first
