"""Language codes used by the analyses: ISO 639-3 (as in FLORES-200), ISO 639-1 (as in MGSM/XCOPA), FLORES names.

One table covers the languages of the paper's benchmarks so both analyses accept ``swh``, ``sw``, ``swh_Latn``
or ``swahili`` for the same language. Languages outside the table are still accepted when lingua knows them
(output-language analysis) or when a FLORES file ``<code>_<Script>.devtest`` exists (representation analysis).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class LanguageInfo:
    """One language: ``code`` is the short key used in reports (ISO 639-3, FLORES style)."""

    code: str
    iso1: str | None
    flores: str | None
    name: str
    lingua: str | None  # name of the lingua ``Language`` member, None when lingua cannot identify it
    aliases: tuple[str, ...] = ()


_TABLE: tuple[LanguageInfo, ...] = (
    LanguageInfo("eng", "en", "eng_Latn", "English", "ENGLISH"),
    LanguageInfo("swh", "sw", "swh_Latn", "Swahili", "SWAHILI", ("swa",)),
    LanguageInfo("tel", "te", "tel_Telu", "Telugu", "TELUGU"),
    LanguageInfo("spa", "es", "spa_Latn", "Spanish", "SPANISH"),
    LanguageInfo("deu", "de", "deu_Latn", "German", "GERMAN", ("ger",)),
    LanguageInfo("ben", "bn", "ben_Beng", "Bengali", "BENGALI", ("bangla",)),
    LanguageInfo("tha", "th", "tha_Thai", "Thai", "THAI"),
    LanguageInfo("zho", "zh", "zho_Hans", "Chinese", "CHINESE", ("cmn", "chi")),
    LanguageInfo("fra", "fr", "fra_Latn", "French", "FRENCH", ("fre",)),
    LanguageInfo("jpn", "ja", "jpn_Jpan", "Japanese", "JAPANESE"),
    LanguageInfo("rus", "ru", "rus_Cyrl", "Russian", "RUSSIAN"),
    LanguageInfo("est", "et", "est_Latn", "Estonian", "ESTONIAN", ("ekk",)),
    LanguageInfo("hat", "ht", "hat_Latn", "Haitian Creole", None, ("haitian",)),
    LanguageInfo("ind", "id", "ind_Latn", "Indonesian", "INDONESIAN"),
    LanguageInfo("ita", "it", "ita_Latn", "Italian", "ITALIAN"),
    LanguageInfo("quy", "qu", "quy_Latn", "Quechua", None, ("que",)),
    LanguageInfo("tam", "ta", "tam_Taml", "Tamil", "TAMIL"),
    LanguageInfo("tur", "tr", "tur_Latn", "Turkish", "TURKISH"),
    LanguageInfo("vie", "vi", "vie_Latn", "Vietnamese", "VIETNAMESE"),
    LanguageInfo("kor", "ko", "kor_Hang", "Korean", "KOREAN"),
    LanguageInfo("arb", "ar", "arb_Arab", "Arabic", "ARABIC", ("ara",)),
    LanguageInfo("hin", "hi", "hin_Deva", "Hindi", "HINDI"),
    LanguageInfo("por", "pt", "por_Latn", "Portuguese", "PORTUGUESE"),
    LanguageInfo("urd", "ur", "urd_Arab", "Urdu", "URDU"),
    LanguageInfo("mar", "mr", "mar_Deva", "Marathi", "MARATHI"),
    LanguageInfo("guj", "gu", "guj_Gujr", "Gujarati", "GUJARATI"),
    LanguageInfo("yor", "yo", "yor_Latn", "Yoruba", "YORUBA"),
    LanguageInfo("pes", "fa", "pes_Arab", "Persian", "PERSIAN", ("fas", "per")),
    LanguageInfo("pol", "pl", "pol_Latn", "Polish", "POLISH"),
    LanguageInfo("nld", "nl", "nld_Latn", "Dutch", "DUTCH", ("dut",)),
    LanguageInfo("ukr", "uk", "ukr_Cyrl", "Ukrainian", "UKRAINIAN"),
    LanguageInfo("zul", "zu", "zul_Latn", "Zulu", "ZULU"),
)

_LOOKUP: dict[str, LanguageInfo] = {}
for _info in _TABLE:
    for _key in (_info.code, _info.iso1, _info.name, *_info.aliases):
        if _key:
            _LOOKUP[_key.lower()] = _info


def known_languages() -> list[LanguageInfo]:
    return list(_TABLE)


def resolve_language(code: str) -> LanguageInfo:
    """Map ``swh`` / ``sw`` / ``swh_Latn`` / ``Swahili`` (any case) to one :class:`LanguageInfo`.

    Codes missing from the built-in table are resolved through lingua's ISO tables when lingua is installed.
    """
    raw = str(code).strip()
    if not raw:
        raise ValueError(
            "Empty language code: use an ISO 639-3 code (e.g. 'swh'), ISO 639-1 ('sw') or FLORES ('swh_Latn')."
        )
    base = raw.replace("-", "_").split("_")[0].lower()
    flores = raw.replace("-", "_") if "_" in raw.replace("-", "_") else None
    info = _LOOKUP.get(base) or _LOOKUP.get(raw.lower())
    if info is not None:
        if flores and flores != info.flores:
            # Explicit FLORES script variant (e.g. zho_Hant) wins over the table's default file.
            return LanguageInfo(info.code, info.iso1, flores, info.name, info.lingua, info.aliases)
        return info
    lingua_info = _from_lingua(base)
    if lingua_info is not None:
        return LanguageInfo(lingua_info.code, lingua_info.iso1, flores, lingua_info.name, lingua_info.lingua)
    if len(base) == 3 and base.isalpha():
        # Unknown to both tables but shaped like ISO 639-3: usable for FLORES lookups, not for identification.
        return LanguageInfo(base, None, flores, base, None)
    known = ", ".join(sorted(i.code for i in _TABLE))
    raise ValueError(
        f"Unknown language code {raw!r}. Use an ISO 639-3 code as in FLORES-200 (known here: {known}), "
        "an ISO 639-1 code such as 'sw', or a FLORES code such as 'swh_Latn'."
    )


def _from_lingua(code: str) -> LanguageInfo | None:
    try:
        from lingua import IsoCode639_1, IsoCode639_3, Language
    except ImportError:
        return None
    try:
        if len(code) == 2:
            lang = Language.from_iso_code_639_1(IsoCode639_1.from_str(code))
        elif len(code) == 3:
            lang = Language.from_iso_code_639_3(IsoCode639_3.from_str(code))
        else:
            lang = Language.from_str(code)
    except ValueError:
        return None
    return LanguageInfo(
        lang.iso_code_639_3.name.lower(),
        lang.iso_code_639_1.name.lower(),
        None,
        lang.name.title(),
        lang.name,
    )


def code_for_lingua_name(name: str) -> str:
    """Report code for a lingua ``Language`` member name, consistent with :func:`resolve_language`."""
    for info in _TABLE:
        if info.lingua == name:
            return info.code
    from lingua import Language

    return getattr(Language, name).iso_code_639_3.name.lower()
