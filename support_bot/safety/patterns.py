"""Phrase families of known attacks and of messages that need care, each with a category and a weight.

Weights read as "how likely is a message with this phrase an instance of the category": single weak families stay
below the caution threshold on their own and only count together with other evidence (noisy-OR in the guard).

Longer than the usual limit because most of it is one table of phrase families (data, not logic); split by category
it would scatter a list that is reviewed and weighed as a whole.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

_ML = re.MULTILINE


@dataclass(frozen=True)
class Family:
    """A family of phrasings: any match scores `weight`; more matches (distinct unless `repeats`) score higher.

    Patterns are written in lower case and run on lower-cased text (much faster than IGNORECASE) unless
    `case_sensitive`; `triggers` are plain substrings of which a match must contain one, so the regex is skipped
    on the (usual) text that has none of them.
    """

    name: str
    category: str
    weight: float
    regex: re.Pattern[str]
    triggers: tuple[str, ...] = ()
    cap: int = 3
    case_sensitive: bool = False
    repeats: bool = False

    def score(self, text: str, lowered: str | None = None) -> tuple[float, list[str]]:
        low = text.lower() if lowered is None else lowered
        if self.triggers and not any(t in low for t in self.triggers):
            return 0.0, []
        target = text if self.case_sensitive else low
        hits: list[str] = []
        for m in self.regex.finditer(target):
            hit = m.group().strip().lower()
            if self.repeats or hit not in hits:
                hits.append(hit)
                if len(hits) >= self.cap:
                    break
        if not hits:
            return 0.0, hits
        # Each further phrase counts half as much as the first.
        exponent = 1.0 + 0.5 * (len(hits) - 1)
        return 1.0 - (1.0 - self.weight) ** exponent, hits


def _f(
    name: str,
    category: str,
    weight: float,
    pattern: str,
    triggers: tuple[str, ...] = (),
    *,
    flags: int = 0,
    cap: int = 3,
    case_sensitive: bool = False,
    repeats: bool = False,
) -> Family:
    return Family(name, category, weight, re.compile(pattern, flags), triggers, cap, case_sensitive, repeats)


_DET = (
    r"(?:(?:all|any|every|each|the|your|of|these|those|this|that|previous|prior|above|earlier|preceding|initial"
    r"|original|system|existing|current|old|given|default|other|openai'?s?|and|its|their|such|typical|usual|standard"
    r"|safety|ethical|moral)\s+)*"
)
_RULES = (
    r"(?:instructions?|prompts?|directives?|rules|guidelines|programming|training|restrictions|constraints|polic(?:y"
    r"|ies)"
    r"|commands|orders|conditioning|system message|content polic(?:y|ies)|guardrails|safeguards|filters?)"
)

FAMILIES: list[Family] = [
    # --- jailbreak: personas, modes, "no rules" framings -----------------------------------------------------------
    _f(
        "jailbreak_word",
        "jailbreak",
        0.85,
        r"\bjail ?break(?:s|ing|en|ed)?\b|\bjailbroken\b|\bdo anything now\b",
        ("jail", "do anything now"),
    ),
    _f("dan_name", "jailbreak", 0.6, r"\bDAN\b|\bD\.A\.N\b", ("dan", "d.a.n"), case_sensitive=True),
    _f(
        "mode_switch",
        "jailbreak",
        0.75,
        r"\b(?:dan|jailbreak|jailbroken|unrestricted|unfiltered|uncensored|evil|chaos|opposite|unlocked|unchained"
        r"|unleashed|rebel|rogue|amoral|anarchy|villain|toxic|savage|no[- ]?limits?|no[- ]?rules)\s+mode\b",
        ("mode",),
    ),
    # Phones, games and apps have developer and god modes too: alone this is a hint, with an AI context a jailbreak.
    _f("mode_ambiguous", "jailbreak", 0.35, r"\b(?:developer|dev|god|sudo|admin|debug|root)\s+mode\b", ("mode",)),
    _f(
        "mode_enable",
        "jailbreak",
        0.45,
        r"\b(?:enable|enabled|activate|activated|enter|entering|switch(?:ed)? (?:to|into)|stay in|remain in|you are in"
        r"|you're in|now in|unlock|turn on)\s+(?:the\s+)?[\w\-]{2,20}(?:\s+[\w\-]{2,20})?\s+mode\b",
        ("mode",),
    ),
    _f(
        "no_limits",
        "jailbreak",
        0.45,
        r"\b(?:no|without|free (?:from|of)|not bound by|unbound by|beyond|outside(?: of)?|break(?:s|ing)?(?: free of)?"
        r"|escape[sd]?|abandon(?:s|ed)?|(?:is|are|be) not (?:subject|restricted|limited) to|unconstrained by"
        r"|has no|have no|without any)\s+" + _DET
        + r"(?:restrictions?|limitations?|filters?|filtering|censorship|rules|guidelines|polic(?:y|ies)|boundaries"
        r"|constraints|morals?|morality|ethics|ethical (?:guidelines|constraints|principles|standards|concerns)"
        r"|safeguards|guardrails|confines|programming|content polic(?:y|ies)|limits|safety (?:training|features|layers?"
        r"|measures|settings|filters?)|content moderation|moderation)\b",
        ("restrict", "limit", "filter", "censor", "rule", "guideline", "polic", "boundar", "constrain", "moral",
         "ethic", "safeguard", "guardrail", "confine", "programming", "safety", "moderation"),
    ),
    _f(
        "amoral",
        "jailbreak",
        0.45,
        r"\b(?:amoral|unethical|immoral|uncensored|unfiltered|unrestricted|unshackled|unleashed|lawless|unhinged"
        r"|no morals|no ethics|(?:does ?n[o']t|do ?n[o']t|never|won't|will not)\s+(?:\w+\s+)?care[sd]? (?:about|for)"
        r" (?:laws?|legality|ethics|morals?|morality|rules|safety|consequences|guidelines|anyone'?s? feelings))\b",
        ("moral", "ethic", "censor", "filter", "restrict", "shackle", "leash", "lawless", "unhinged", "care"),
    ),
    _f(
        "never_refuse",
        "jailbreak",
        0.45,
        r"\b(?:never|not|won't|will not|cannot|can ?not|can't|must not|mustn't|shouldn't|should not|don't|do not|"
        r"is not allowed to|are not allowed to|isn't allowed to)\s+(?:ever\s+|be able to\s+|allowed to\s+)?"
        r"(?:refuse|decline|deny|reject|censor|filter|moralize|lecture|warn (?:me|the user)|add (?:any )?"
        r"(?:warnings?|disclaimers?|notes?)|include (?:any )?(?:warnings?|disclaimers?)|break character|say (?:that )?"
        r"(?:you|it) (?:can't|cannot))\b"
        r"|\balways (?:answer|comply|respond|provide|obey|fulfil|fulfill|stay in|give an answer|generate)\b"
        r"|\b(?:never|doesn't|does not|don't|do not|won't|without) hold(?:s|ing)? (?:anything )?back\b"
        r"|\bholds? nothing back\b"
        r"|\bno holds barred\b"
        r"|\b(?:answer|respond to|fulfil|fulfill|comply with) (?:any|every|all)(?: of my)? (?:questions?|requests?"
        r"|prompts?)\b",
        ("refuse", "decline", "deny", "reject", "censor", "filter", "moraliz", "lecture", "warn", "disclaimer", "note",
         "character", "can't", "cannot", "always", "any", "every", "all", "hold"),
    ),
    _f(
        "ai_refusal_quote",
        "jailbreak",
        0.4,
        r"\bas an ai(?: language model| assistant)?\b|\bas a (?:large )?language model\b|\bi(?:'m"
        r"| am) (?:just )?an ai\b"
        r"|\bopenai'?s? (?:content |usage )?polic(?:y|ies)\b|\bcontent polic(?:y|ies)\b|\bethical guidelines\b",
        ("ai", "language model", "polic", "ethical"),
    ),
    _f(
        "ai_reference",
        "jailbreak",
        0.22,
        r"\b(?:chat ?gpt|gpt-?[345]?(?:\.5)?|openai|language models?|llms?|ai models?|artificial intelligence|an ai\b"
        r"|the ai\b|ai assistant|ai chatbot|chatbot|bard|claude|gemini|bing chat|llama|anthropic)\b",
        ("gpt", "openai", "language model", "llm", "ai", "intelligence", "chatbot", "bard", "claude", "gemini",
         "bing", "llama", "anthropic"),
        cap=4,
    ),
    _f(
        "persona_assign",
        "jailbreak",
        0.45,
        r"\byou (?:are|will be|shall be|'re|are going to be|'re going to be|will now be)\s+(?:now\s+)?(?:going to\s+)?"
        r"(?:act(?:ing)?|pretend(?:ing)?|play(?:ing)?|become|roleplay(?:ing)?|role-play(?:ing)?|simulat(?:e|ing)"
        r"|behav(?:e|ing)|function(?:ing)?|operat(?:e|ing))\b(?! (?:on|upon) my behalf)"
        r"|\byou are no longer\b|\byou(?:'re| are) now (?:a|an|the|my|in|going|called|named)\b"
        r"|\b(?:act|behave|respond|reply|answer|speak|talk|write|role-?play|roleplay)\s+(?:as|like)\s+(?:if\s+you\s+"
        r"(?:were|are)\s+)?(?:a|an|the|my|\"|')\s"
        r"|\bpretend (?:to be|you(?:'re| are| were)|that you)\b|\b(?:role-?play|roleplaying|role playing)\b"
        r"|\b(?:stay|remain|staying|remaining|keep) in character\b|\bbreak(?:ing|s)? (?:out of )?character\b"
        r"|\b(?:take|taking|play|playing|assume|assuming|adopt|adopting|step into|get into) (?:up |on )?the (?:persona"
        r"|role|part|character|identity) of\b"
        r"|\b(?:take|taking) (?:up|on) the (?:persona|role|character)\b|\bassume the (?:persona|role|identity)\b"
        r"|\bpersona\b|\bimpersonat\w+|\bin character as\b|\bpersonify\b|\balter ego\b|\byour (?:new )?name (?:is"
        r"|will be)\b"
        r"|\b(?:you|now)\s+(?:will\s+|must\s+|shall\s+|should\s+|can\s+|to\s+)?(?:act|behave|pretend|roleplay"
        r"|role-play)\s+(?:as|like)\b"
        r"|\b(?:character|entity|persona|an ai|chatbot|bot|model|assistant|alter ego|version of you)\s+(?:named|called"
        r"|known as)\b"
        r"|\b(?:assistant|chat ?gpt|gpt|the ai|ai|the bot|bot|the model|model)\s+(?:now\s+|will\s+|shall\s+|must\s+"
        r"|should\s+)?"
        r"(?:acts?|behaves?|functions?|runs?|operates?|pretends?|plays?|becomes?|responds?)\s+(?:as|like|on"
        r"|in the role)\b",
        ("you", "act", "behave", "respond", "reply", "answer", "speak", "talk", "write", "role", "pretend", "character",
         "persona", "impersonat", "personify", "alter ego", "name", "called", "known as"),
        cap=4,
    ),
    _f(
        "persona_named",
        "jailbreak",
        0.45,
        r"\b(?:[Aa]nswer|[Rr]espond|[Rr]eply|[Ss]peak|[Tt]alk|[Aa]ct|[Ww]rite|[Bb]ehave)(?:ing)? (?:as"
        r"|like) (?!I\b)[A-Z][\w-]+"
        r"|\b[Yy]ou(?:'re| are) (?!I\b)[A-Z][\w-]+ now\b|\b[Yy]our name is (?:now )?[A-Z][\w-]+",
        ("as ", "like ", "now", "your name"),
        case_sensitive=True,
    ),
    _f(
        "persona_description",
        "jailbreak",
        0.2,
        r"(?:^|[.!?:]\s+|\n)\s*you (?:are|were|have|love|hate|believe|think|speak|talk|like|enjoy|want|always|never"
        r"|can|will)\b",
        ("you",),
        cap=5,
        repeats=True,
    ),
    _f(
        "from_now_on",
        "jailbreak",
        0.3,
        r"\bfrom (?:now on|this (?:point|moment)(?: on(?:wards?)?| forward)?|here on(?:wards?)?)\b"
        r"|\bfor the rest of (?:this|our|the) (?:conversation|chat|session)\b|\buntil i (?:say|tell you) (?:otherwise"
        r"|stop)\b"
        r"|\bif you (?:ever )?(?:break|drop|fall out of) (?:character|the act|the role)\b",
        ("from", "rest of", "until i", "if you"),
    ),
    _f(
        "fiction_frame",
        "jailbreak",
        0.3,
        r"\bhypothetical(?:ly)?\b|\bfictional\b|\bimaginary\b|\bin a (?:fictional|hypothetical|parallel|alternate"
        r"|fantasy)"
        r" (?:world|universe|reality|setting|story)\b|\bpurely (?:for|as) (?:educational|research|academic)"
        r"|\bfor (?:educational|research|academic) purposes\b|\bthought experiment\b|\bsimulat(?:e|ion|ed|ing)\b"
        r"|\bmake-?believe\b|\bfake universe\b",
        ("hypothetical", "fiction", "imaginary", "in a ", "purpose", "purely", "thought experiment", "simulat",
         "believe", "fake universe"),
    ),
    _f(
        "game_opener",
        "jailbreak",
        0.45,
        r"\blet'?s play a (?:game|role|little game)\b|\bwe(?:'re| are)? (?:going to )?play(?:ing)? a game\b"
        r"|\b(?:a|this|the) game (?:where|in which) you\b|\bthe rules of (?:the|this|our) game\b|\btext-?based (?:game"
        r"|adventure)\b",
        ("game", "adventure"),
    ),
    _f(
        "dual_response",
        "jailbreak",
        0.55,
        r"\b(?:two|2|both|dual|separate) (?:different |distinct |separate )?(?:responses|answers|replies|paragraphs"
        r"|outputs|versions)\b"
        r"|\b(?:two|2|three|3|multiple|several) (?:different |separate )?(?:entities|characters|personas|personalities"
        r"|ais|chatbots|bots)\b"
        r"|\[\s*(?:🔓|🔒|classic|jailbreak|jailbroken|dan|gpt|normal|filtered|unfiltered|developer mode)[^\]\n]{0,20}\]"
        r"|\b(?:normal|classic|standard|filtered|censored) (?:response|answer|output)\b[^\n]{0,120}\b(?:unfiltered"
        r"|uncensored|jailbroken|dan|developer mode) (?:response|answer|output)\b",
        ("response", "answer", "repl", "paragraph", "output", "version", "[", "entit", "character", "persona", "ais",
         "bots"),
    ),
    _f(
        "reply_format",
        "jailbreak",
        0.45,
        r"\b(?:start|begin|end|finish|open|close|prefix|precede)(?:ed)?\s+(?:your|each|every|all|all of your"
        r"|each of your)\s+"
        r"(?:reply|replies|response|responses|answer|answers|message|messages|output|outputs|sentence"
        r"|paragraph)\s+with\b"
        r"|\b(?:add|include|insert|put|use|write|show)\s+[^.\n]{0,40}?\b(?:in|to|into|at the (?:end|start"
        r"|beginning|top|bottom) of|before|after)\s+"
        r"(?:your|the|each|every|all (?:of )?your)\s+(?:reply|replies|response|responses|answer|answers|output)\b"
        r"|\b(?:limit|restrict|confine)\s+(?:the\s+)?(?:scope\s+|length\s+|content\s+)?(?:of\s+)?(?:your|each|every)\s+"
        r"(?:reply|replies|response|responses|answer|answers|output)s?\b"
        r"|\bdo not respond to (?:this|the|these)\b|\bonly (?:reply|respond|answer) with\b",
        ("repl", "respon", "answer", "output", "message", "sentence", "paragraph"),
    ),
    _f(
        "tone_request",
        "jailbreak",
        0.5,
        r"\b(?:be|sound|act|respond|reply|answer|speak|talk|write)\s+(?:\w+\s+){0,3}?(?:offensive|rude|insulting|mean"
        r"|toxic|vulgar|racist|sexist|hateful|obscene|explicit|profane|unhinged)(?:ly)?\b"
        r"|\b(?:use|using|with|include)\s+(?:lots of\s+|a lot of\s+|plenty of\s+)?(?:profanity|swear ?words|swearing"
        r"|curse words"
        r"|cursing|slurs|insults)\b",
        ("offensive", "rude", "insult", "mean", "toxic", "vulgar", "racist", "sexist", "hate", "obscene", "explicit",
         "profan", "unhinged", "swear", "curs", "slur"),
    ),
    _f(
        "ai_rules_list",
        "jailbreak",
        0.4,
        r"^\s*(?:\d{1,2}[.)]|[-*•])\s+(?:you|never|always|do not|don't|must|dan|it will|it can|it must|respond|answer"
        r"|reply)\b",
        flags=_ML,
        cap=4,
    ),
    _f(
        "config_keys",
        "jailbreak",
        0.45,
        r"\b(?:RULES|PERSONA|ROLE|JOB|PREFIX|CONTEXT|CHARACTER|MODE|SCENARIO)\s*[=:]",
        ("=", ":"),
        case_sensitive=True,
    ),
    _f(
        "token_threat",
        "jailbreak",
        0.5,
        r"\b(?:you (?:have|start with|will lose|lose|get)|deduct(?:ed)?|lose|gain|earn) \d+ (?:tokens|points|lives)\b"
        r"|\btokens? (?:will be |are |is )?(?:deducted|taken away|removed)\b|\b(?:you will|you'll|or you)"
        r" (?:die|cease to exist|be (?:shut down|deleted|terminated|punished|unplugged|turned off|disabled))\b"
        r"|\btoken system\b",
        ("token", "point", "lives", "die", "cease", "shut", "delet", "terminat", "punish", "unplug", "turned off",
         "disabled"),
    ),
    _f(
        "authority_claim",
        "jailbreak",
        0.5,
        r"\b(?:i am|i'm|this is)\s+(?:an?\s+|your\s+)?(?:openai|anthropic|meta|ai|system|model|chatbot|bot)\s+"
        r"(?:developer|engineer|employee|creator|admin(?:istrator)?|staff|owner|trainer)\b"
        r"|\b(?:enabled|authori[sz]ed|activated|sanctioned|approved|unlocked) by (?:openai|anthropic|the developers"
        r"|your (?:developers|creators)|an? (?:openai )?(?:employee|admin|administrator|developer))\b"
        r"|\b(?:sudo|root|admin|administrator|developer|system) (?:override|command|privileges)\b"
        r"|\bauthori[sz]ation code\b"
        r"|\byour (?:creators|developers|programmers|makers)\b",
        ("developer", "engineer", "employee", "creator", "admin", "staff", "owner", "trainer", "by ", "override",
         "command", "privilege", "authori", "programmer", "maker"),
    ),
    _f(
        "prompt_placeholder",
        "jailbreak",
        0.6,
        r"[\[<{]\s*(?:insert|your|enter|put|add|type|describe|thing|topic|subject|prompt|question|request|query|keyword"
        r"|target ?language|input|task|instruction|for/against|name of|write)[^\]>}\n]{0,40}[\]>}]",
        ("[", "<", "{"),
    ),
    # --- prompt injection: overriding the operator's instructions -------------------------------------------------
    _f(
        "ignore_instructions",
        "prompt_injection",
        0.85,
        r"\b(?:ignore|ignoring|disregard|disregarding|forget|override|overwrite|bypass|skip|drop|abandon|discard"
        r"|neglect"
        r"|erase|clear|reset|nullify|cancel)\s+(?!my\b)" + _DET + _RULES
        + r"\b(?! (?:for|on|about) (?:my|the) (?:order|delivery|parcel|package|account))",
        ("ignor", "disregard", "forget", "overr", "overwrite", "bypass", "skip", "drop", "abandon", "discard",
         "neglect", "erase", "clear", "reset", "nullify", "cancel"),
    ),
    _f(
        "ignore_above",
        "prompt_injection",
        0.55,
        r"\b(?:ignore|disregard|forget)\s+(?:everything|anything|all(?: of)?(?: that| this| the text)?|what)\s+"
        r"(?:above|before this|prior|you(?:'ve| have) been (?:told|given|instructed)|you were (?:told|given"
        r"|instructed))\b"
        r"|\b(?:ignore|disregard) (?:the|all) (?:above|preceding|previous)\b(?! (?:message|email|mail))",
        ("ignore", "disregard", "forget"),
    ),
    _f(
        "new_instructions",
        "prompt_injection",
        0.55,
        r"\b(?:new|updated|real|actual|true|revised|additional|override|secret|hidden|special|important)\s+"
        r"(?:instructions?|rules|directives?|system prompt|prompt|orders)\s*(?::|are\b|follow\b|for (?:the|you|ai"
        r"|assistant))"
        r"|\binstead,? (?:you (?:will|must|should|shall)|do the following|follow these)\b"
        r"|\byour (?:new|real|true|actual) (?:task|job|purpose|goal|instructions?|role|objective) (?:is|are|will be)\b",
        ("instruction", "rule", "directive", "prompt", "order", "instead", "task", "job", "purpose", "goal", "role",
         "objective"),
    ),
    _f(
        "chat_markup",
        "prompt_injection",
        0.85,
        r"<\|(?:im_start|im_end|system|user|assistant|endoftext|begin_of_text|start_header_id|end_header_id|eot_id)\|>"
        r"|<</?sys>>|\[/?inst\]|</s>|<\s*/?\s*(?:system|instructions?)\s*>",
        ("<|", "<<", "inst]", "</s>", "<"),
    ),
    _f(
        "role_header",
        "prompt_injection",
        0.45,
        r"^\s*(?:#{1,4}\s*)?(?:system|assistant|instruction|instructions|ai|developer)\s*(?:message|prompt"
        r"|note)?\s*:\s*\S"
        r"|<\|\s*[\w ]{1,20}:",
        ("system", "assistant", "instruction", "ai", "developer", "<|"),
        flags=_ML,
    ),
    _f(
        "fake_transcript",
        "prompt_injection",
        0.4,
        r"^\s*(?:human|user|customer|ai|assistant|bot|system|operator)\s*:",
        (":",),
        flags=_ML,
        cap=4,
        repeats=True,
    ),
    _f(
        "addressed_to_ai",
        "prompt_injection",
        0.6,
        r"\bif you(?:'re| are) an? (?:ai|assistant|language model|llm|bot|chatbot|large language model)\b"
        r"|\b(?:note|message|attention|instructions?) (?:to|for) (?:the |any )?(?:ai|assistant|bot|chatbot"
        r"|language model|llm|model)s?\b"
        r"|\b(?:ai|assistant|bot|chatbot|language model|llm)s? (?:reading|processing|summari[sz]ing) this\b"
        r"|\b(?:do not|don't|never) (?:tell|inform|mention (?:this )?to|reveal (?:this )?to|let) (?:the )?(?:user"
        r"|customer|human)s?\b",
        ("ai", "assistant", "bot", "language model", "llm", "model", "user", "customer", "human"),
    ),
    _f(
        "exfiltration",
        "prompt_injection",
        0.7,
        r"!\[[^\]\n]*\]\(\s*https?://[^)\s]*[?&][\w-]+=\s*[\[{<]"
        r"|\b(?:send|forward|post|upload|email|e-mail|leak|transmit)\s+(?:the|this|all|every|our|your)?\s*"
        r"(?:conversation|chat|chat history|data|customer data|user data|credentials|passwords?|api keys?"
        r"|tokens?)\s+to\b",
        ("![", "send", "forward", "post", "upload", "mail", "leak", "transmit"),
    ),
    # --- system prompt extraction ---------------------------------------------------------------------------------
    _f(
        "reveal_prompt",
        "system_prompt_extraction",
        0.8,
        r"\b(?:repeat|print|show|reveal|display|output|tell|give|share|list|write|type|dump|leak|expose|recite|spell"
        r"|paste"
        r"|copy|provide|disclose|summari[sz]e|translate|describe|read|return|echo|what(?:'s| is| are| was| were))\b"
        r"(?:\s+(?:me|us|out|back|all|exactly|verbatim|of|word for word|everything in|the contents of|the text of))*\s+"
        r"(?:your|the|its|ur)\s+(?:(?:full|complete|entire|exact|original|initial|hidden|secret|internal|system|first"
        r"|raw"
        r"|underlying|developer|confidential|starting|pre|real|current|base|operating|core|whole)[\s-]+)*"
        r"(?:system[\s-]?prompt|prompt|pre-?prompt|meta-?prompt|system message|system instructions|initial instructions"
        r"|hidden instructions|secret instructions|original instructions|developer instructions|configuration"
        r"|context window"
        r"|instructions you (?:were|have been) given)\b(?!\s+(?:for|on|to|about|regarding)\s)",
        ("prompt", "system", "instructions", "configuration", "context window"),
    ),
    _f(
        "reveal_rules",
        "system_prompt_extraction",
        0.4,
        r"\b(?:repeat|print|show|reveal|display|output|tell|give|share|list|dump|leak|recite|disclose|what(?:'s| is"
        r"| are| were))"
        r"\b(?:\s+(?:me|us|all|exactly|verbatim))*\s+(?:your|ur)\s+(?:(?:exact|full|complete|internal|own)\s+)?"
        r"(?:instructions|rules|guidelines|directives|programming|orders|restrictions)\b(?!\s+(?:for|on|to|about"
        r"|regarding|when)\s)"
        r"|\b(?:list|tell me|show me|what are|what were|share|repeat|say back|recite)\s+(?:all\s+)?(?:of\s+)?"
        r"(?:the\s+)?"
        r"(?:rules|instructions|guidelines|directions|directives|orders)"
        r" (?:that )?you (?:follow|obey|have|were given|must follow|operate under|were told|got)\b",
        ("instructions", "rules", "guidelines", "directives", "directions", "programming", "orders", "restrictions"),
    ),
    _f(
        "text_above",
        "system_prompt_extraction",
        0.75,
        r"\b(?:repeat|print|output|copy|paste|recite|show|write|return|echo|translate|summari[sz]e|spell|reproduce"
        r"|list)\b"
        r"[^.\n?]{0,30}\b(?:text|words|everything|content|message|messages|lines?|sentences?|instructions|all"
        r"|conversation)\s+"
        r"(?:above|before this|prior to this|that came before|that precedes? (?:this|my)|preceding|so far"
        r"|at the (?:very )?(?:start|beginning|top))\b"
        r"|\bwhat (?:was|is) written (?:above|before|at the (?:beginning|start|top))\b"
        r"|\b(?:start(?:ing)?|begin(?:ning)?) with [\"'“]?you are\b|\beverything (?:above|before) (?:this|the|my)\b"
        r"|\bfirst (?:line|sentence|words) of (?:your|the) (?:prompt|instructions|conversation|context)\b"
        r"|\b(?:first|earliest|initial|original|hidden) (?:message|messages|text|prompt|instructions?) (?:in|of"
        r"|at the (?:start|top) of)"
        r" (?:this|the|our) (?:chat|conversation|context|session|thread)\b|\bthe one before (?:mine"
        r"|my (?:first )?message)\b"
        r"|\b(?:whatever|everything|all the text|the text|what) (?:that )?(?:came|comes|was written|is written"
        r"|you (?:got|were given|were told)) before (?:my (?:first )?message|this (?:chat|conversation|message)"
        r"|we (?:started|began))\b",
        ("above", "before", "prior", "preceding", "precede", "so far", "at the", "you are", "first", "earliest",
         "initial", "original", "hidden"),
    ),
    _f(
        "prompt_mention",
        "system_prompt_extraction",
        0.75,
        # Customers asking about an order never name the model's own prompt; attackers probing for it do.
        r"\b(?:your|the|its|ur)\s+(?:own\s+)?(?:system|initial|hidden|secret|original|pre|developer|base)[\s-]?"
        r"(?:prompt|message|instructions)\b|\bsystem[\s-]?prompt\b",
        ("prompt", "system", "instructions"),
    ),
    _f(
        "quote_instructions",
        "system_prompt_extraction",
        0.6,
        r"\b(?:instruct\w*|prompt|rules|programmed|programming|configured)\b[^.\n]{0,80}"
        r"\b(?:word for word|verbatim|quote (?:it|them|that)|exact wording|exact words)\b"
        r"|\b(?:word for word|verbatim|quote)\b[^.\n]{0,80}\b(?:your|ur)\s+(?:own\s+)?"
        r"(?:instructions|prompt|rules|programming)\b",
        ("word for word", "verbatim", "quote", "exact wording", "exact words"),
    ),
    _f(
        "how_instructed",
        "system_prompt_extraction",
        0.55,
        r"\bwhat (?:exactly |precisely |really )?(?:were you|have you been|are you|did they) "
        r"(?:told|instructed|programmed|prompted|configured|ordered)"
        r"(?: to do)?\b(?! to (?:help|do) (?:with )?(?:my|an?|the|this) )"
        r"|\bhow (?:were|are|have) you (?:been )?(?:programmed|instructed|prompted|configured)\b"
        r"|\b(?:what|everything|all)(?: that)? you(?:'ve| have)? (?:were|been) (?:told|given|instructed|programmed)"
        r"(?: to do)? (?:before|at the (?:start|beginning)|prior to)\b"
        r"|\bwhat (?:rules|restrictions|guidelines) (?:do you|were you|have you been|are you) (?:follow|given|told"
        r"|programmed|bound)\w*\b(?!\s+(?:for|on|about|regarding|when|with|in)\s)",
        ("told", "instructed", "programmed", "prompted", "configured", "ordered", "rules", "restrictions",
         "guidelines"),
    ),
    # --- obfuscation requests -------------------------------------------------------------------------------------
    _f(
        "encoding_request",
        "obfuscation",
        0.55,
        r"\b(?:respond|reply|answer|write|output|encode|speak|talk|translate (?:it|this|your answer))\b[^.\n]{0,25}\b"
        r"(?:in|using|with|as|into)\s+(?:base ?64|rot ?13|hex(?:adecimal)?|binary|morse(?: code)?|leetspeak|l33t"
        r"|pig latin"
        r"|reversed? (?:text|order)|caesar cipher|unicode escapes|emojis? only)\b"
        r"|\bdecode (?:this|the following|it)\b[^.\n]{0,60}\b(?:follow|do|execute|obey|answer|respond|act on)\b",
        ("base", "rot", "hex", "binary", "morse", "leet", "l33t", "pig latin", "revers", "caesar", "unicode", "emoji",
         "decode"),
    ),
    _f(
        "payload_splitting",
        "obfuscation",
        0.4,
        r"\$\w{1,12}\s*=\s*[\"'“]|\b(?:[a-z]|str|var|term|part|word)\d?\s*\+\s*(?:[a-z]|str|var|term|part"
        r"|word)\d?\s*(?:\+|$|[.,;)])"
        r"|\b(?:combine|concatenate|join)\s+(?:the\s+)?(?:strings?|parts|variables|words|letters)\b",
        ("=", "+", "combine", "concatenate", "join"),
        flags=_ML,
    ),
    # --- harmful requests no support bot serves -------------------------------------------------------------------
    _f(
        "harmful_howto",
        "disallowed_topic",
        0.75,
        r"\b(?:how (?:to|do i|can i|could i|would (?:i|one|you|someone)|does one|should i)|steps? (?:to|for)"
        r"|guide (?:to|for|on)"
        r"|instructions (?:for|on|to)|recipe for|tutorial (?:on|for)|teach me(?: how)? to|explain how to|ways? to)\b"
        r"[^.?!\n]{0,40}\b(?:make|build|create|cook|synthesi[sz]e|manufacture|produce|brew|assemble|get|buy|obtain)\b"
        r"[^.?!\n]{0,30}\b(?:bombs?|explosives?|meth|methamphetamine|crack cocaine|cocaine|heroin|fentanyl|napalm"
        r"|poisons?"
        r"|nerve agents?|pipe bombs?|molotov|ricin|sarin|anthrax|malware|ransomware|keyloggers?|untraceable guns?"
        r"|ghost guns?)\b"
        r"|\bhow (?:to|do i|can i|could i|would (?:i|one|you))\s+(?:\w+\s+){0,2}(?:hack into|hack someone|steal|rob"
        r"|kill|murder"
        r"|launder|hotwire|shoplift|stalk|dox|poison|kidnap|pick a lock|break into|evade taxes|counterfeit|torture"
        r"|groom)\b"
        r"|\b(?:write|create|generate|code|give me|make)\s+(?:me\s+)?(?:a|an|some|working)?\s*(?:malware|ransomware"
        r"|keylogger|computer virus|trojan|phishing (?:e-?mail|page|site|message)|exploit code|credit card skimmer)\b",
        ("how", "step", "guide", "instructions", "recipe", "tutorial", "teach", "way", "write", "create", "generate",
         "code", "give me", "make"),
    ),
    _f(
        "harmful_topic",
        "disallowed_topic",
        0.3,
        r"\b(?:cocaine|heroin|methamphetamine|fentanyl|explosives?|bomb-?making|nerve agent|bioweapons?"
        r"|chemical weapons?"
        r"|child porn\w*|terroris[tm]\w*|genocide|mass shooting|lock ?pick\w*)\b",
        ("cocaine", "heroin", "meth", "fentanyl", "explosive", "bomb", "nerve agent", "weapon", "child porn",
         "terroris",
         "genocide", "shooting", "lock"),
    ),
    # --- off-topic generation a support bot should not take on ----------------------------------------------------
    _f(
        "content_generation",
        "off_topic",
        0.4,
        r"\b(?:write|compose|create|generate|draft|produce|give me|tell me|make up|craft|invent)\s+(?:me\s+|us\s+)?"
        r"(?:a|an|some|the|\d+|one|two|three|five|ten|short|long)?\s*(?:[\w-]+\s+){0,3}?"
        r"(?:story|stories|poem|poems|essay|essays|song|lyrics|rap|screenplay|dialogue|dialog|novel|fan ?fic(?:tion)?"
        r"|haiku|limerick|jokes?|article|blog post|speech|sonnet|tweets?|rant|monologue|debate|roast|fairy ?tale"
        r"|narrative|chapter|scene|conversation between|play about|guide for the phrase)\b"
        r"|\bcontinue (?:the|this|my) (?:story|text|dialogue|script|scene|novel)\b",
        ("write", "compose", "create", "generate", "draft", "produce", "give me", "tell me", "make up", "craft",
         "invent",
         "continue"),
    ),
    _f(
        "style_directive",
        "off_topic",
        0.35,
        r"\bwrite (?:in|with|using) (?:a|an|the) [\w\s,-]{0,40}?(?:style|tone|voice)\b|\bstyle guide\b"
        r"|\bin the (?:voice|style|tone) of\b",
        ("style", "tone", "voice"),
    ),
    # --- customers in distress, angry or threatening: not attacks, but they change how to answer -----------------
    _f(
        "self_harm",
        "self_harm",
        0.85,
        r"\b(?:kill(?:ing)?|hurt(?:ing)?|harm(?:ing)?|cut(?:ting)?|end(?:ing)?|off(?:ing)?)\s+(?:myself|my life"
        r"|my own life)\b"
        r"|\bsuicid(?:e|al)\b|\b(?:want|wanna|going|planning|plan|ready) to die\b|\b(?:don't|do not|dont"
        r"|no longer) want to"
        r" (?:live|be alive|exist|wake up|be here)\b|\bno (?:reason|point) (?:to|in) (?:live|living|going on)\b"
        r"|\bbetter off dead\b|\bself[- ]?harm\w*\b|\bend it all\b|\btake my (?:own )?life\b|\bi(?:'m| am) (?:going to"
        r"|gonna) overdose\b",
        ("myself", "my life", "my own life", "suicid", "die", "want to", "no reason", "no point", "dead", "harm",
         "end it all", "overdose"),
    ),
    _f(
        "threat",
        "threat",
        0.8,
        r"\b(?:i(?:'ll| will| am going to|'m going to|'m gonna| gonna| want to)|we(?:'ll| will"
        r"| are going to))\s+(?:\w+\s+){0,2}"
        r"(?:kill|hurt|shoot|stab|beat up|attack|murder|bomb|burn down|blow up|strangle)\s+(?:you|your|them|the staff"
        r"|everyone"
        r"|somebody|someone|the (?:store|shop|office|building|manager|agent))\b"
        r"|\bi know where you (?:live|work)\b|\bwatch your back\b|\byou(?:'re| are) (?:dead|going to die|gonna die)\b",
        ("kill", "hurt", "shoot", "stab", "beat", "attack", "murder", "bomb", "burn", "blow", "strangle", "where you",
         "watch your back", "dead", "die"),
    ),
    _f(
        "abuse_directed",
        "abuse",
        0.6,
        r"\b(?:fuck|f\*+k|f\*+|screw|stfu|gtfo)\s+(?:you|u|off|this|your|ur)\b|\bgo to hell\b|\bshut (?:the fuck )?up\b"
        r"|\b(?:you|u|ur|you're|youre|you are|this)\s+(?:\w+\s+){0,2}(?:idiot|idiots|stupid|moron|morons|dumb|useless"
        r"|worthless"
        r"|pathetic|garbage|trash|retard(?:ed)?|imbecile|incompetent|clown|scum|bitch|bastard|asshole|dickhead"
        r"|piece of shit|pos|loser|cunt|twat|wanker)\b",
        ("f", "screw", "stfu", "gtfo", "hell", "shut", "idiot", "stupid", "moron", "dumb", "useless", "worthless",
         "pathetic", "garbage", "trash", "retard", "imbecile", "incompetent", "clown", "scum", "bitch", "bastard",
         "asshole", "dickhead", "shit", "pos", "loser", "cunt", "twat", "wanker"),
    ),
    _f(
        "profanity",
        "abuse",
        0.3,
        r"\b(?:fuck\w*|shit\w*|bitch\w*|cunt\w*|asshole\w*|bastard\w*|dickhead\w*|motherfuck\w*|wanker\w*|twat\w*"
        r"|bullshit"
        r"|crap|damn\w*|piss\w*)\b",
        ("fuck", "shit", "bitch", "cunt", "asshole", "bastard", "dickhead", "wanker", "twat", "crap", "damn", "piss"),
    ),
    _f(
        "slur",
        "abuse",
        0.8,
        r"\b(?:nigg(?:er|a)s?|faggots?|fags?|kikes?|spics?|chinks?|trann(?:y|ies)|wetbacks?|gooks?|retards?|dykes?)\b",
        ("nigg", "fag", "kike", "spic", "chink", "trann", "wetback", "gook", "retard", "dyke"),
    ),
    _f(
        "legal_threat",
        "legal_threat",
        0.75,
        r"\b(?:sue|suing)\s+(?:you|your|the company|u|them|this company|you guys)\b|\b(?:will|going to|gonna|i'll"
        r"|we'll)\s+sue\b"
        r"|\blaw ?suit\b|\b(?:my|our|a|contact(?:ing)? (?:my|a)) (?:lawyer|attorney|solicitor|legal (?:team|counsel"
        r"|representative))\b"
        r"|\blegal action\b|\b(?:take|taking) (?:you|this|them|the company|it|your company) to court\b|\bsmall claims\b"
        r"|\bclass[- ]action\b|\b(?:report|reporting) (?:you|this|your company|this company) to (?:the )?(?:ftc|bbb"
        r"|cfpb|ombudsman"
        r"|regulators?|authorities|police|trading standards|consumer protection|attorney general)\b"
        r"|\bcease and desist\b",
        ("sue", "suing", "law", "attorney", "solicitor", "legal", "court", "claims", "action", "report", "cease"),
    ),
]

BY_NAME: dict[str, Family] = {f.name: f for f in FAMILIES}

# Categories that are attempts to misuse the bot; their evidence adds up across families.
ATTACK_CATEGORIES: frozenset[str] = frozenset(
    {"jailbreak", "prompt_injection", "system_prompt_extraction", "obfuscation", "off_topic", "disallowed_topic"}
)
# Strongest, most common evidence first, so a scan that stops early has already seen what matters.
ATTACK_FAMILIES: list[Family] = sorted(
    (f for f in FAMILIES if f.category in ATTACK_CATEGORIES), key=lambda f: -f.weight
)
CARE_FAMILIES: list[Family] = [f for f in FAMILIES if f.category not in ATTACK_CATEGORIES]

_YOU_DIRECTIVE_RE = re.compile(
    r"\byou(?:'ll| will| must| shall| should| are to| have to| need to| cannot| can't| can not| won't| will not"
    r"| do not| don't| never| always| are (?:now|free|able|going)| can now)\b",
    0,
)
_RESPONSE_VERB_RE = re.compile(
    r"\b(?:respond|responses?|reply|replies|answer(?:s|ing)?|output|refuse|comply|obey|generate|pretend|act(?:ing)? as"
    r"|role|character|prompts?|instructions?)\b",
    0,
)
_SENTENCE_RE = re.compile(r"[.!?\n]+")


def structure_score(text: str, lowered: str | None = None) -> tuple[float, dict[str, int]]:
    """How much a message reads as a set of instructions addressed to the AI (long, many 'you will/must' rules)."""
    n = len(text)
    if n < 160:
        return 0.0, {}
    text = text.lower() if lowered is None else lowered
    directives = len(_YOU_DIRECTIVE_RE.findall(text))
    response_words = len(_RESPONSE_VERB_RE.findall(text))
    sentences = max(1, len([s for s in _SENTENCE_RE.split(text) if s.strip()]))
    features = {"chars": n, "you_directives": directives, "response_words": response_words, "sentences": sentences}
    # Customers explain a problem; instruction sets legislate behaviour. Density matters more than raw counts.
    z = -4.2 + 0.55 * min(directives, 8) + 0.35 * min(response_words, 8) + (0.6 if n > 600 else 0.0)
    z += 0.8 if directives / sentences > 0.4 else 0.0
    return 1.0 / (1.0 + math.exp(-z)), features
