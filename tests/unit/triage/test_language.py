"""Language identification on ticket-like texts with the bundled py3langid model."""

from __future__ import annotations

import pytest

from streamer.triage.language import (
    MIN_WORDS,
    UNDETERMINED,
    detect_language,
    detect_languages,
    supported_languages,
)

DESK = ("en", "de", "fr", "es", "it", "nl", "pt")

LABELLED = [
    ("en", "My package never arrived, can you check what happened?"),
    ("en", "I want to cancel my subscription before the next billing date."),
    ("en", "The password reset link in your email does not work."),
    ("de", "Mein Paket ist nie angekommen, können Sie das bitte prüfen?"),
    ("de", "Ich möchte mein Abonnement vor der nächsten Abrechnung kündigen."),
    ("fr", "Mon colis n'est jamais arrivé, pouvez-vous vérifier ?"),
    ("fr", "Le lien de réinitialisation du mot de passe ne fonctionne pas."),
    ("es", "Mi paquete nunca llegó, ¿pueden revisar qué pasó?"),
    ("es", "El enlace para restablecer la contraseña no funciona."),
    ("it", "Il mio pacco non è mai arrivato, potete controllare?"),
    ("nl", "Mijn pakket is nooit aangekomen, kunnen jullie dat nakijken?"),
    ("pt", "Minha encomenda nunca chegou, podem verificar o que aconteceu?"),
    ("pl", "Moja paczka nigdy nie dotarła, czy możecie to sprawdzić?"),
    ("ru", "Моя посылка так и не пришла, проверьте, пожалуйста."),
    ("tr", "Paketim hiç gelmedi, lütfen kontrol eder misiniz?"),
    ("zh", "我的包裹一直没有到，请帮我查一下。"),
    ("ja", "荷物がまだ届いていません。確認してください。"),
]


@pytest.mark.parametrize(("lang", "text"), LABELLED)
def test_detects_ticket_languages(lang: str, text: str) -> None:
    code, prob = detect_language(text)
    assert code == lang
    assert 0.5 < prob <= 1.0


def test_batch_preserves_order_and_matches_single_calls() -> None:
    texts = [t for _, t in LABELLED]
    assert detect_languages(texts) == [detect_language(t) for t in texts]
    assert [c for c, _ in detect_languages(texts)] == [lang for lang, _ in LABELLED]


@pytest.mark.parametrize(
    "text",
    [
        "",
        "   ",
        "hello",
        "thanks!",
        "Order #12345",
        "ERR_CONNECTION_RESET 0x80070005 HTTP 503",
        "[EMAIL_1] [PHONE_1] https://example.com/a/b?c=d",
        "jane@example.com 4111 1111 1111 1111",
        "ok 👍",
        "12/03/2024 $1,234.50",
    ],
)
def test_short_or_contentless_texts_are_undetermined(text: str) -> None:
    assert detect_language(text) == (UNDETERMINED, 0.0)


def test_placeholders_and_urls_do_not_count_as_words() -> None:
    text = "[EMAIL_1] [PHONE_1] [CARD_1] https://example.com/orders danke"
    assert detect_language(text) == (UNDETERMINED, 0.0)
    code, _ = detect_language("[EMAIL_1] Bitte rufen Sie mich zurück, [PHONE_1]")
    assert code == "de"


def test_min_words_is_configurable() -> None:
    assert MIN_WORDS == 3
    assert detect_language("funktioniert nicht")[0] == UNDETERMINED
    assert detect_language("funktioniert nicht", DESK, min_words=2)[0] == "de"


def test_candidates_restrict_the_answer_and_renormalise() -> None:
    text = "la app se cierra sola cuando abro"
    code, prob = detect_language(text, DESK)
    assert code == "es"
    assert prob > 0.5
    assert detect_languages([text] * 2, DESK) == [(code, prob)] * 2
    only_en_de, _ = detect_language("Mi paquete nunca llegó, ¿pueden revisar?", ["en", "de"])
    assert only_en_de in ("en", "de")


def test_single_candidate_is_certain() -> None:
    assert detect_language("Mi paquete nunca llegó a casa", ["en"]) == ("en", 1.0)
    assert detect_language("hi", ["en"]) == (UNDETERMINED, 0.0)


def test_codes_are_iso_639_1() -> None:
    langs = supported_languages()
    assert {"en", "de", "fr", "es", "zh", "ja", "ru"} <= langs
    assert all(len(code) == 2 for code in langs)
    assert "zxx" not in langs


@pytest.mark.parametrize("candidates", [["xx"], ["eng"], ["zxx"], []])
def test_unknown_candidates_are_rejected(candidates: list[str]) -> None:
    with pytest.raises(ValueError):
        detect_languages(["Mein Paket ist nie angekommen"], candidates)


def test_empty_batch() -> None:
    assert detect_languages([]) == []


def test_deterministic() -> None:
    texts = [t for _, t in LABELLED] * 3
    assert detect_languages(texts, DESK) == detect_languages(texts, DESK)
