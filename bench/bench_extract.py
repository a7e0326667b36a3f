"""Throughput of the pure triage core: PII redaction, entity extraction and language identification.

    python bench/bench_extract.py [--n 5000] [--seed 7] [--json out.json]

Texts are short synthetic tickets (one to three sentences, several languages, PII and entities
mixed in), generated from a seed so runs compare. Everything is single-threaded; the numbers are
texts per second on one core. If ``lingua`` (lingua-language-detector) is importable, the language
section also compares it with py3langid on speed and on a small labelled set of ticket sentences.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from streamer.triage.extract import extract
from streamer.triage.language import detect_languages
from streamer.triage.pii import redact

SENTENCES = {
    "en": [
        "Hi, my order {order} hasn't arrived yet and the tracking page shows no update since {date}.",
        "I was charged {amount} twice for the same subscription, please refund one of them.",
        "The app crashes on {version} every time I open the settings screen.",
        "Please call me back at {phone} or write to {email}, I am available all afternoon.",
        "Login fails with {error} since yesterday, I already reinstalled the client.",
        "My card {card} was declined although the balance is fine.",
        "Can you update the bank details on my account to {iban}?",
        "The dashboard at {url} returns a blank page for our whole team.",
    ],
    "de": [
        "Hallo, meine Bestellung {order} ist immer noch nicht angekommen.",
        "Mir wurden {amount} doppelt abgebucht, bitte erstatten Sie den Betrag.",
        "Die App stürzt unter {version} beim Start sofort ab.",
        "Bitte rufen Sie mich unter {phone} zurück oder schreiben Sie an {email}.",
        "Seit gestern bekomme ich beim Anmelden den Fehler {error}.",
    ],
    "fr": [
        "Bonjour, ma commande {order} n'est toujours pas arrivée.",
        "On m'a débité {amount} deux fois, merci de me rembourser.",
        "L'application plante sur {version} dès que j'ouvre mes paramètres.",
        "Vous pouvez me joindre au {phone} ou par mail à {email}.",
    ],
    "es": [
        "Hola, mi pedido {order} todavía no ha llegado a casa.",
        "Me cobraron {amount} dos veces por la misma compra.",
        "La aplicación se cierra en {version} cuando intento pagar.",
        "Pueden llamarme al {phone} o escribirme a {email} por favor.",
    ],
}
SLOTS: dict[str, list[str]] = {
    "order": ["#12345", "ORD-55512", "order 123-4567", "#998877"],
    "date": ["2024-03-12", "12/03/2024", "March 3rd", "yesterday", "last Monday"],
    "amount": ["$1,234.50", "€12", "12 EUR", "£3.99", "100 dollars", "1.234,56 €"],
    "version": ["iOS 17.2", "Android 14", "v2.3.1", "app version 5.4"],
    "phone": ["+1 (555) 123-4567", "555-123-4567", "07700 900123", "+49 30 1234567", "01 23 45 67 89"],
    "email": ["jane.doe@example.com", "m.mueller@example.de", "support+ticket@example.org"],
    "error": ["ERR_CONNECTION_RESET", "E1234", "HTTP 503", "0x80070005", "error code 504"],
    "card": ["4111 1111 1111 1111", "5555-5555-5555-4444", "378282246310005"],
    "iban": ["DE89 3704 0044 0532 0130 00", "GB82WEST12345698765432", "FR1420041010050500013M02606"],
    "url": ["https://status.example.com/incidents/42", "https://app.example.com/u?email=a@b.com"],
}

# Labelled ticket sentences and two/three-word snippets for a language accuracy spot check.
LABELLED = [
    ("en", "My package never arrived, can you check what happened?"),
    ("en", "I want to cancel my subscription before the next billing date."),
    ("en", "The password reset link in your email does not work."),
    ("en", "Still waiting for my refund, it has been two weeks."),
    ("en", "app keeps crashing"),
    ("de", "Mein Paket ist nie angekommen, können Sie das bitte prüfen?"),
    ("de", "Ich möchte mein Abonnement vor der nächsten Abrechnung kündigen."),
    ("de", "Der Link zum Zurücksetzen des Passworts funktioniert nicht."),
    ("de", "Ich warte immer noch auf meine Rückerstattung."),
    ("de", "App stürzt ständig ab"),
    ("fr", "Mon colis n'est jamais arrivé, pouvez-vous vérifier ?"),
    ("fr", "Je voudrais résilier mon abonnement avant la prochaine facture."),
    ("fr", "Le lien de réinitialisation du mot de passe ne fonctionne pas."),
    ("fr", "J'attends toujours mon remboursement depuis deux semaines."),
    ("fr", "l'appli plante toujours"),
    ("es", "Mi paquete nunca llegó, ¿pueden revisar qué pasó?"),
    ("es", "Quiero cancelar mi suscripción antes de la próxima factura."),
    ("es", "El enlace para restablecer la contraseña no funciona."),
    ("es", "Sigo esperando mi reembolso desde hace dos semanas."),
    ("es", "la app se cierra sola"),
    ("it", "Il mio pacco non è mai arrivato, potete controllare?"),
    ("it", "Vorrei disdire il mio abbonamento prima della prossima fattura."),
    ("it", "Il link per reimpostare la password non funziona."),
    ("it", "Sto ancora aspettando il rimborso da due settimane."),
    ("nl", "Mijn pakket is nooit aangekomen, kunnen jullie dat nakijken?"),
    ("nl", "Ik wil mijn abonnement opzeggen voor de volgende factuur."),
    ("nl", "De link om mijn wachtwoord te resetten werkt niet."),
    ("pt", "Minha encomenda nunca chegou, podem verificar o que aconteceu?"),
    ("pt", "Quero cancelar minha assinatura antes da próxima cobrança."),
    ("pt", "O link para redefinir a senha não funciona."),
    ("en", "wrong item"),
    ("en", "refund please"),
    ("de", "falscher Artikel"),
    ("de", "funktioniert nicht"),
    ("fr", "où est mon colis"),
    ("fr", "ne marche pas"),
    ("es", "no funciona"),
    ("es", "artículo equivocado"),
    ("it", "non funziona"),
    ("nl", "werkt niet"),
    ("pt", "não funciona"),
]
DESK_LANGUAGES = ("en", "de", "fr", "es", "it", "nl", "pt")


def make_texts(n: int, seed: int) -> list[str]:
    """``n`` tickets of one to three sentences, mostly English, slots filled at random."""
    rnd = random.Random(seed)
    langs = ["en"] * 6 + ["de"] * 2 + ["fr", "es"]
    texts: list[str] = []
    for _ in range(n):
        lang = rnd.choice(langs)
        parts = [rnd.choice(SENTENCES[lang]) for _ in range(rnd.randint(1, 3))]
        texts.append(" ".join(p.format(**{k: rnd.choice(v) for k, v in SLOTS.items()}) for p in parts))
    return texts


def rate(fn: Callable[[], object], count: int, repeat: int = 3) -> float:
    """Best-of-``repeat`` items per second (the least disturbed run on a shared machine)."""
    best = float("inf")
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return count / best


def bench_core(texts: Sequence[str]) -> tuple[dict[str, float], dict[str, float]]:
    t0 = time.perf_counter()
    rss_before = _max_rss_mib()
    detect_languages(texts[:1])  # model load is a one-off; not part of the rate
    load = {"py3langid_load_s": time.perf_counter() - t0, "py3langid_rss_growth_mib": _max_rss_mib() - rss_before}
    redactions = [redact(t) for t in texts]
    rates = {
        "redact": rate(lambda: [redact(t) for t in texts], len(texts)),
        "extract": rate(lambda: [extract(t) for t in texts], len(texts)),
        "extract_reusing_redaction": rate(
            lambda: [extract(t, r) for t, r in zip(texts, redactions, strict=True)], len(texts)
        ),
        "detect_languages": rate(lambda: detect_languages(texts), len(texts)),
        "detect_languages_desk7": rate(lambda: detect_languages(texts, DESK_LANGUAGES), len(texts)),
    }
    return rates, load


def accuracy(predict: Callable[[list[str]], list[str]]) -> dict[str, Any]:
    texts = [t for _, t in LABELLED]
    got = predict(texts)
    wrong = [(want, g, t) for (want, t), g in zip(LABELLED, got, strict=True) if g != want]
    return {"correct": len(LABELLED) - len(wrong), "total": len(LABELLED), "wrong": wrong}


def bench_lingua(texts: Sequence[str]) -> dict[str, Any] | None:
    try:
        from lingua import IsoCode639_1, LanguageDetectorBuilder
    except ImportError:
        return None
    t0 = time.perf_counter()
    all_langs = LanguageDetectorBuilder.from_all_languages().build()
    desk = LanguageDetectorBuilder.from_iso_codes_639_1(
        *[getattr(IsoCode639_1, c.upper()) for c in DESK_LANGUAGES]
    ).build()
    load_s = time.perf_counter() - t0

    def predict(det: Any) -> Callable[[list[str]], list[str]]:
        def run(batch: list[str]) -> list[str]:
            langs = [det.detect_language_of(t) for t in batch]
            return [lang.iso_code_639_1.name.lower() if lang is not None else "und" for lang in langs]

        return run

    sample = list(texts[:2000])
    # lingua loads its per-language models lazily on first use: warm up, and time that separately.
    rss_before = _max_rss_mib()
    t0 = time.perf_counter()
    predict(all_langs)(sample[:50])
    predict(desk)(sample[:50])
    load_s += time.perf_counter() - t0
    return {
        "load_s": round(load_s, 2),
        "max_rss_growth_mib": round(_max_rss_mib() - rss_before),
        "texts_per_s_all": round(rate(lambda: predict(all_langs)(sample), len(sample), repeat=1)),
        "texts_per_s_desk7": round(rate(lambda: predict(desk)(sample), len(sample), repeat=1)),
        "accuracy_all": accuracy(predict(all_langs)),
        "accuracy_desk7": accuracy(predict(desk)),
    }


def _max_rss_mib() -> float:
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=5000, help="number of synthetic texts")
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--json", type=Path, help="also write the results here")
    args = ap.parse_args(argv)

    texts = make_texts(args.n, args.seed)
    lengths = [len(t) for t in texts]
    rates, load = bench_core(texts)
    results: dict[str, Any] = {
        "n": len(texts),
        "chars_median": statistics.median(lengths),
        "chars_mean": round(statistics.fmean(lengths), 1),
        "texts_per_s": {k: round(v) for k, v in rates.items()},
        "py3langid_load": {k: round(v, 2) for k, v in load.items()},
        "py3langid_accuracy_all": accuracy(lambda b: [c for c, _ in detect_languages(b, min_words=1)]),
        "py3langid_accuracy_desk7": accuracy(
            lambda b: [c for c, _ in detect_languages(b, DESK_LANGUAGES, min_words=1)]
        ),
    }
    lingua = bench_lingua(texts)
    if lingua is not None:
        results["lingua"] = lingua
    print(json.dumps(results, indent=2, ensure_ascii=False, default=str))
    if args.json:
        args.json.write_text(json.dumps(results, indent=2, ensure_ascii=False, default=str))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
