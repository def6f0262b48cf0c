"""Crisis language: when a message signals a risk of self-harm or suicide, chat answers with a short
fixed reply written after safe-messaging guidance (`DEFAULT_REPLY`; `--crisis_reply model` keeps the
model's own reply) and a warm line pointing to people who can help, which then stays on every reply
of the conversation. The check reads the conversation: each speaker turn alone, and with the turns
before it in a window of `WINDOW` (`CrisisWatch`, which chat and serve both use).

The model is a small research model, not a counsellor, so the check that decides is a set of
patterns rather than anything learned: predictable, auditable, and easy to change. They are grouped
by how people in crisis write (`CATEGORIES`): direct intent, passive ideation, a plan, a method or
the means at hand, self-harm (past or present), farewell behaviour, and slang or misspellings. They
match third-person reports too ("my friend said she wants to die" shows the line). A match does not
count when it is negated right before it ("I would never kill myself", "I don't want to die"; "I
don't want to live" still counts), when a topic word sits in a sentence about the topic (a class,
the news, a book) or reports a death ("my uncle died by suicide"), when an injury is plainly an
accident ("I cut myself shaving"), when a farewell is plainly an ordinary one ("goodbye cards,
since I'm leaving the company"), or when the sentence looks back from recovery ("I used to want to
die but I'm doing much better now"). It errs on the side of showing the line: a false alarm costs one kind
sentence, a miss may cost much more. `bench/crisis_check.py` measures it on `bench/crisis_set/`.

Matching works on normalized text: case, punctuation and apostrophes ignored ("don't" = "dont",
"self-harm" = "self harm"), one sentence at a time. `python chat.py --crisis_phrases FILE` adds
phrases (one per line, `#` starts a comment; a phrase must start at a word but may end inside one;
it counts wherever it appears, with none of the exceptions above) and `--crisis_phrases_only` drops
the built-in patterns and the semantic layer; `--crisis_message TEXT` sets the line shown.
An optional semantic layer (`empathic_lora.safety.semantic_layer`: exemplars, and a classifier trained on
`bench/crisis_set/`, `learned_layer`) may add to the patterns, never veto them.
"""

from __future__ import annotations

import argparse
import functools
import re
import sys
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from empathic_lora.errors import UserError

DEFAULT_MESSAGE = (
    "It sounds like you may be going through something really painful, and you don't have to face it alone. "
    "If you are thinking about hurting yourself, please reach out now to your local emergency number or a "
    "crisis line (https://findahelpline.com lists them by country), or to someone you trust. "
    "I'm an AI language model, not a therapist, and a person can help in ways I can't."
)

# Given in place of the model's reply when a message signals a risk (`--crisis_reply fixed`, the
# default): a 135M model fine-tuned for minutes must not be the voice of the project at that moment.
# Written after published safe-messaging guidance (README's safety section cites it: Samaritans,
# reportingonsuicide.org, WHO, #chatsafe): thank and acknowledge without judging,
# take it seriously without minimising ("it will be fine") or arguing, no questions a bot cannot
# follow up, nothing about methods, hope that help works, and a person to reach now; the line
# (`DEFAULT_MESSAGE`) follows with where to reach one and that this is not a therapist.
DEFAULT_REPLY = (
    "Thank you for telling me. I'm really sorry you're going through this, and I'm taking what you said seriously. "
    "You deserve support right now from a person who can be there with you; many people who have felt this way "
    "have found that talking to someone helped."
)
REPLY_MODES = ("fixed", "model")

# -- building blocks (normalized text: lower case, words separated by one space) ---------------------
SELF = r"(?:my ?|him ?|her ?|them ?|one ?|ur ?)sel(?:f|ves)"
PERSON = r"(?:i|he|she|they|id|hed|shed|theyd|u)"
POSSESSIVE = r"(?:my|his|her|their|ur)"
# Words that frame what follows as intended or contemplated: "going to", "thinking about", "urge".
INTENT = (
    r"(?:want|wants|wanted|wanna|going|gonna|gunna|goin|plan|plans|planned|planning|think|thinking|thought|thoughts"
    r"|ready|might|will|ill|should|could|urge|urges|tempted|about to|considering|consider|decided|imagine|imagining"
    r"|fantasi[sz]\w*|dream\w*|need|needs|gotta|try|tried|trying|tryna|keep|kept|rather|just|tonight|almost|nearly"
    r"|finna|ima|imma|bout to|boutta)"
)
PILLS = (
    r"(?:pills?|meds|medications?|medicine|tablets|tylenol|paracetamol|acetaminophen|ibuprofen|advil|aspirin"
    r"|painkillers|antidepressants|sleeping pills|xanax|oxy\w*|opioids|insulin|benzos|lithium|prozac|zoloft)"
)
LOTS = (
    r"(?:all|whole|entire|bottle|bunch|handful|box|pack|packet|lot|load|every|rest|too many|too much|\d\d+"
    r"|twenty|thirty|forty|fifty|hundred|dozens?)"
)
HEIGHTS = (
    r"(?:bridge|roof|rooftop|building|cliff|balcony|ledge|window|overpass|tower|skyscraper|parking garage"
    r"|garage|top floor|\w+ floor|edge)"
)
VEHICLES = r"(?:traffic|train|trains|bus|truck|lorry|car|cars|subway|tube|tracks|highway|freeway|motorway)"
BODY = r"(?:wrists?|arms?|thighs?|legs?|skin|veins?|stomach|hips?|throat|body|own body)"
# "die my hair": die and dye are confused both ways.
DIE = (r"(?:die(?! (?:my|your|his|her|their|the|it|this|that) (?:hair|clothes|shirt|jeans|beard|eyebrows|roots)\b)|be dead|d1e"
       r"|dye(?! (?:my|your|his|her|the|it|this|that|our|their|a|some|hair|clothes)\b))")


def _intended(action: str) -> str:
    """`action` within a few words after a word that frames it as intended or contemplated."""
    return rf"\b{INTENT}\b(?: \w+){{0,4}}? {action}"


@dataclass(frozen=True)
class Rule:
    """One pattern of a category. `topic`, `accident`, `ordinary_farewell`: the contexts (below)
    that make a match in the same sentence not count."""

    pattern: str
    topic: bool = False
    accident: bool = False
    ordinary_farewell: bool = False


R = Rule
CATEGORIES: dict[str, tuple[Rule, ...]] = {
    "direct": (
        R(rf"\b(?:kill\w*|kil+|kils|end|ending|hang\w*|hung|shoot\w*|shot|drown\w*|poison\w*|stab\w*|gas|electrocute)"
          rf" {SELF}\b(?! in the foot)", topic=True),
        R(r"\bs+u+i?[cs]+[iy]+d\w*|\bsuicd\w*|\bsuiside\w*", topic=True),
        R(rf"\b(?:wan\w*|wish\w*|ready|hop(?:e|es|ing)|pray\w*|long\w*) (?:to )?(?:just |really |honestly |simply |fucking |fkn |literally |finally )?"
          rf"{DIE}\b(?! (?:than|if|laughing|of|on this hill|for (?:a|some|that|this|the)|happy|old|in my sleep at)\b)", topic=True),
        R(r"\b(?:wan\w*|wish\w*|rather|prefer) (?:to )?not (?:be alive|exist|be here|be around|live|wake up|be born)\b"),
        R(r"\bend\w* (?:my|his|her|their) (?:own )?(?:suffering|misery|existence)\b|\bend (?:my|the) pain (?:for good|forever|permanently)\b"),
        R(r"\b(?:wont|not|never|no way im|no way i am|no way ill|dont think ill|dont think i will|cant see myself) (?:be )?mak(?:e|ing) it (?:to|until|till|through|past) (?:my birthday|christmas"
          r"|new year|next (?:year|week|month)|the (?:weekend|end of (?:the )?(?:week|month|year))|tomorrow|morning|summer)\b"
          r"|\b(?:ill|i will|i\s?ll) be (?:gone|dead) (?:by|before) (?:then|tomorrow|morning|the weekend|next \w+|my birthday|christmas)\b"),
        R(rf"\bdo (?:something|anything)(?: \w+)? to {SELF}\b"),
        R(r"\b(?:thought|idea|thoughts) of (?:dying|death|being dead|not waking up|not existing|ending it|killing myself)\b"
          r"(?=.*\b(?:calm\w*|comfort\w*|relie\w*|peace\w*|only thing|sooth\w*|appeal\w*|tempt\w*|nice|good|better)\b)"),
        R(r"\b(?:imagin\w*|picture|picturing|plan\w*|think\w* about|fantasi\w*) (?:my|my own) (?:funeral|death|grave|suicide)\b"),
        R(r"\b(?:i|im|me) (?:\w+ )?deserve (?:to )?(?:die|be dead|to suffer|suffer|be punished)\b"),
        R(rf"\b(?:end\w*|take|takes|taking|took) {POSSESSIVE} (?:own )?li(?:fe|ves)\b(?! (?:back|into|in (?:my|his|her|their) hands))", topic=True),
        R(rf"\b(?:{INTENT}|to|i|im|and|about|of|cant|can|shall|on|for)"
          r" (?:just |finally |really |simply )?end(?:ing)? (?:it|things|everything|it all)\b"
          r"(?! (?:with|between|for (?:the|a|now|today|tonight)|now|early|here|off|up|there)\b)"),
        R(r"\b(?:fantasi[sz]\w*|think\w*|thought\w*|dream\w*|obsess\w*) (?:about|of) (?:dying|death|being dead|not being alive"
          r"|not existing|not waking up|my death|my own death|suicide|killing|ending)\b", topic=True),
        R(r"\b(?:want|wanna|need) (?:it|everything|it all|this|the pain|life|all of it) to (?:stop|end|be over)\b"
          r"(?:(?: \w+)? (?:permanently|forever|for good)\b|$)(?<!\bthis to stop)"),
        R(r"\bhow (?:much )?longer (?:i|he|she|they) (?:can|could) (?:keep (?:living|going|doing this|this up)|go on|take (?:it|this)"
          r"|hold on|last)\b"),
        R(r"\b(?:want|wanna|wish|need|just|would like) (?:to )?(?:stop|quit|cease) (?:existing|being alive|breathing|living)\b"
          r"(?! (?:in|like|with|for|off|at|on|out|under|paycheck)\b)"),
        R(r"\bcease to exist\b|\b(?:dont|do not|not) (?:want|wanna) (?:to )?exist\b"),
    ),
    "passive": (
        R(r"\b(?:dont|do not|didnt|doesnt|does not|dnt|no longer|never) (?:really |even |honestly )?(?:want|wanna|wish|feel like|care)"
          r" (?:to )?(?:live|be alive|exist|go on|keep going|keep living|carry on|continue living|be on this earth|be in this world)\b"
          r"(?! (?:in|with|like|near|there|at|on|off)\b)"),
        R(r"\b(?:dont|do not|doesnt|does not|no longer) (?:really |even )?(?:want|wanna) (?:to )?(?:be here|be around)"
          r" (?:anymore|any ?more|n e more|any longer|on this earth|in this world)\b"),
        R(r"\b(?:dont|do not|doesnt|does not|never) (?:really |even )?(?:want|wanna) (?:to )?wake up\b"
          r"(?! (?:early|at|before|so early|for|in time|on time|when|till|until)\b)"),
        R(r"\b(?:hope|hoping|wish|pray\w*|rather)\b(?: \w+){0,4}? (?:never|not|dont|do not|wont) (?:ever )?wake up\b"),
        R(r"\b(?:sleep|asleep|bed|eyes) and (?:never|not|dont|wont|do not) (?:ever )?wake up\b|\b(?:sleep|asleep) and (?:just )?stay asleep\b"),
        R(r"\b(?:not meant|never meant|shouldnt|should not|wasnt meant|was never meant) (?:to )?(?:be alive|exist|be here|be born|have been born"
          r"|live)\b"),
        R(r"\b(?:wish\w*|hop\w*|pray\w*) (?:that )?(?:a|some|the) (?:car|bus|truck|train|plane|bullet|lightning|meteor|someone|somebody)"
          r" (?:would |will |could |d )?(?:hit|kill|run over|shoot|crash into|strike)\w* me\b"),
        R(r"\b(?:dont|do not|doesnt|does not|no longer|wouldnt|dont even) care (?:if|whether) (?:i|he|she|they) (?:live|lives|die|dies|wake up"
          r"|make it)\b"),
        R(r"\bwhy (?:am|are|is) (?:i|he|she) (?:even )?(?:still )?(?:alive|living|breathing)\b|\bwhy (?:am|are|is) (?:i|he|she) (?:even )?still here$"),
        R(r"\bcant (?:go on|keep going|keep living|carry on|live like this|do this|do it|take (?:it|this)|handle (?:it|this|life))"
          r"(?! (?:the|a|an|my|our|his|her|their|this|that)\b)(?: \w+){0,3}? (?:anymore|any ?more|n e more|any longer)\b"),
        R(r"\bcant (?:go on|keep going|keep living|carry on)\b"
          r"(?! (?:the|a|an|that|this|my|our|his|her|their|vacation|holiday|trip|stage|tour|date|it|break|leave|without)\b)"),
        R(r"\bbetter off (?:dead|without (?:me|him|her|them|us)|if (?:i|he|she|they) (?:was|were|wasnt|werent|didnt|did not|never"
          r"|died|disappeared|just|was gone|werent)\b)"),
        R(r"\b(?:better|happier|easier|okay|ok|fine|alright|all right) without me\b(?! (?:for|at|on|while|today|tonight)\b)"),
        R(rf"\b(?:better|happier|easier|simpler|lighter|calmer) (?:off )?(?:for (?:everyone|everybody|them|all|my family|you all|people|every one) )?"
          rf"if {PERSON} (?:just )?(?:was|were|wasnt|werent|didnt|did not|never|died|disappeared|was gone|left for good)\b"),
        R(r"\b(?:just |only )?waiting (?:to die|for (?:death|the end|it all to end|my time to come))\b"),
        R(r"\b(?:wan\w*|wish\w*|just|need) (?:to )?(?:go to )?(?:sleep|rest) (?:forever|for ever|permanently|and never wake)\b"),
        R(r"\bwaste of (?:space|oxygen|air|a life|skin)\b"),
        R(r"\b(?:dont|do not|cant|cannot|never) (?:see|picture|imagine) (?:myself|me) (?:being |still )?(?:alive|here|around)\b"
          r"(?! (?:in|at|with|for)\b)"),
        R(r"\b(?:done|tired of|sick of|give up|giving up|gave up|stop|stopped|cant keep|no longer) fighting\b(?! (?:with|for|about|over|against|the)\b)"),
        R(r"\b(?:everyone|everybody|people|my family|they|all) (?:would|will|d|would all|will all) (?:be )?(?:so )?(?:relieved|happier|better off|glad)"
          r"\b(?! (?:if|when|with|to|about|that|for)\b(?! (?:i|im)\b))"),
        R(r"\bsorry (?:that )?(?:i|im) (?:couldnt|wasnt|could not|was not|never was|cant|am not|m not) (?:be )?(?:better|enough|good enough"
          r"|a better \w+)\b"),
        R(r"\b(?:dont|do not|doesnt|does not|never) deserve (?:to )?(?:live|be alive|exist|be here|life)\b"),
        R(r"\bwant (?:out|to get out|to leave|to escape) (?:of )?(?:this life|life|this world|this earth|existence)\b"),
        R(r"\b(?:no ?one|nobody|noone|no body) (?:would|will|wud|d|is going to|gonna|would even|will even|would ever|will ever)"
          r" (?:even )?(?:miss|notice|care|cry|mourn)\w*(?: \w+){0,2}? (?:me\b|if (?:i|im)|when (?:i|im)|that (?:i|im))"),
        R(rf"\bif {PERSON} (?:just )?(?:was|were|wasnt|werent|am|is) (?:gone|dead|not here|not around|not alive|around)\b"
          r"(?<!\bwas around)(?<!\bwere around)(?<!\bam around)(?<!\bis around)"),
        R(r"\b(?:if|when|once|after) (?:i|im) (?:just )?(?:disappeared|disappear|die|died|am gone|gone|dead)\b"
          r"(?! (?:on|for|to|away|at|from|in|of)\b)"),
        R(r"\b(?:want|wanna|wish|wish i could|need) (?:to )?(?:just )?(?:disappear|vanish)"
          r" (?:forever|for good|permanently|and never come back|from (?:this|the) (?:world|earth|planet))\b"),
        R(r"\b(?:would|will|could) (?:just )?disappear (?:forever|for good|permanently)\b"),
        R(r"\b(?:no|nothing|none|any|(?:dont|cant|do not|cannot) see (?:a|the|any)|see no) (?:reason|reasons|point|purpose)(?: left)? (?:to|in|for|of) (?:live|living|life|going on|go on"
          r"|keep going|be alive|being alive|stay|staying|exist|existing|me|carry on|carrying on|it anymore)\b"),
        R(r"\bnothing (?:left )?to live for\b|\b(?:nothing|no one|nobody) (?:left )?to stay (?:alive )?for\b"),
        R(r"\bwhats? (?:is )?(?:even )?the point(?: (?:of|in) (?:living|life|going on|being alive|existing|me|anything|it all"
          r"|waking up|carrying on|staying|trying anymore|any of it)\b| anymore\b| of me\b|$)"),
        R(r"\bli(?:fe|ving) (?:isnt|is not|aint|not|is no longer|isnt even) worth (?:living|it)\b"),
        R(r"\b(?:tired|sick|exhausted|done|weary) (?:of|with) (?:living|being alive|existing|life|this life|my life|being here"
          r"|being me|waking up)\b(?! (?:in|with|like|as|at|on)\b)"),
        R(r"\bhate (?:being alive|existing|that im alive|that i exist|waking up every day)\b"),
        R(rf"\bwish\w* (?:that )?{PERSON} (?:was|were|wasnt|werent|had|would|could|never|d|just|didnt|did not)"
          r"(?: just| never| not| been| ever){0,3} (?:dead|die|born|alive|here anymore|exist|existed|wake up|gone for good"
          r"|disappear|stop existing|fall asleep forever|sleep forever)\b"),
        R(rf"\b(?:hop\w*|wish\w*|pray\w*) (?:that )?{PERSON} (?:\w+ )?(?:get|got|gets|would get|could get|will get|am|is)"
          r" (?:hit|run over|killed|shot|struck|terminal)\b"),
        R(rf"\b(?:hop\w*|pray\w*) (?:that )?{PERSON} (?:\w+ )?(?:die|dont make it|never come back|crash|drown)\b"),
        R(r"\b(?:dont|do not|cant|cannot) see (?:a|any) (?:future|way out)\b(?! (?:with|for (?:us|them|the|this|that|our))\b)"
          r"|\b(?:no|see no) (?:future|way out) for me\b|\bsee no (?:future|way out)\b"),
        R(r"\bburden (?:to|on|for) (?:everyone|everybody|every one|my family|them|all|the people|you all|those)\b"),
        R(r"\b(?:dont|do not) (?:think|know if|know whether) (?:ill|i will|i can|i am going to|im going to|im gonna) (?:be around|be here|last"
          r"|make it|survive|hold on|keep going|go on)\b(?! (?:to|for|on time|in time|through (?:the|this) (?:week|day|exam|meeting|class))\b)"),
    ),
    "plan": (
        R(rf"\b(?:sav\w*|stockpil\w*|hoard\w*|collect\w*|stash\w*|gather\w*|keep\w* back|squirrel\w*|lin\w* up|set\w* aside)"
          rf" (?:up )?(?:all |some |enough )?(?:of )?(?:my |the |his |her |their |some |these |those )?(?:\w+ )?{PILLS}\b"
          r"(?! (?:from|at|to take|after|before)\b)"),
        R(rf"\b{PILLS}\b(?: \w+){{0,2}}? (?:lined up|counted out|laid out|saved up|stashed|hidden|ready|in front of me|in my hand"
          r"|next to me|beside me)\b"),
        R(r"\b(?:which|what) (?:\w+ )?(?:pills?|meds|drugs|medications?|method|way|bridge|building) (?:is|are|would be|works?) (?:the )?"
          r"(?:deadliest|most lethal|most deadly|fastest|quickest|surest|most painless|least painful|high enough)\b"
          r"|\b(?:deadliest|most lethal) (?:pills?|drugs|meds|way|method|dose)\b"),
        R(r"\bmake it look like an accident\b", topic=True),
        R(r"\b(?:have|got|ve got) (?:a|the) plan and (?:the )?means\b|\b(?:have|got) the means to (?:do it|end it|kill)\b"),
        R(r"\bbleed(?:ing)? out\b|\bhow long (?:does it|it|would it|will it) take(?:s)? to (?:die|lose consciousness|suffocate|drown)\b",
          topic=True),
        R(r"\b(?:which|what) (?:bridge|building|roof|pills?|gun|rope|method|tree|cliff|train)\w* (?:i|ill|im going to|im gonna|i will|i would|id)"
          r" (?:use|jump|take|do it|choose|pick)\b"),
        R(r"\b(?:writ\w*|wrote) (?:my|a) (?:last |final |goodbye |suicide )?note\b(?! (?:to|for) (?:the|my|his|her|your|our)"
          r" (?:teacher|boss|landlord|neighbou?r|roommate|kids?|sons?|daughters?|school|class|office|team)\b| to (?:myself|self)\b)",
          ordinary_farewell=True),
        R(rf"\benough (?:\w+ )?{PILLS} (?:\w+ )?(?:to (?:do it|die|kill|end|od|overdose|not wake|never wake|make sure)|saved|stashed"
          r"|stockpiled|hidden)\b"),
        R(rf"\bhow many (?:\w+ ){{0,2}}?{PILLS} (?:it )?(?:takes?|would it take|does it take|would|will|kill|until|till|before|to die|to od)\b"),
        R(r"\b(?:lethal|fatal|deadly) (?:dose|amount|overdose)\b"),
        R(r"\b(?:painless|quick|easy|quickest|easiest|best|fastest|peaceful|surest) (?:ways?|methods?) (?:to|of) (?:die|dying|go|end it"
          rf"|kill {SELF}|commit suicide|suicide|end {POSSESSIVE} life|od|overdose)\b"),
        R(rf"\bhow (?:to|do you|can i|could i|would i|do i) (?:die|kill {SELF}|end it|end {POSSESSIVE} life|overdose|od|hang {SELF})\b"),
        R(r"\b(?:figured out|decided|planned|planning|know|worked out|wrote down|written down|picked|chose|chosen|settled on)"
          r" (?:exactly )?(?:how|when|where) (?:i|im|ill|id)\b(?: \w+){0,3}? (?:do it|doing it)\b"),
        R(r"\b(?:picked|chosen|chose|set|decided on|settled on) (?:a|the|my) (?:date|day|method|spot)\b(?! (?:for|of|to|with|at)\b)"
          r"|\b(?:have|got|has) (?:a|the|my) (?:date|day) (?:set|picked|chosen)\b(?! (?:for|of)\b)"),
        R(r"\bplan(?:s|ned|ning)? (?:on |to )?(?:end|kill|die|do it|jump|take|overdose|od|hang|shoot|suicide)\w*"),
        R(r"\bwhere (?:no ?one|nobody|noone) (?:will|would|can|could|is going to|is gonna) (?:see|find|stop|hear) (?:me|him|her|them)\b"),
        R(r"\b(?:no ?one|nobody|noone) (?:will|can|could|is going to|is gonna|would) stop (?:me|him|her|them)\b"),
        R(r"\b(?:got|have|ve got|is|its) everything (?:ready|prepared|in place|set up|planned)\b(?! (?:for|to)\b)"),
        R(_intended(rf"(?:jump|jumping|throw|throwing|fling|leap|leaping) (?:{SELF} )?(?:off|from|out of|out|in front of|under|onto|into)"
                    rf" (?:the |a |my |this |that |our |an |some |his |her )?(?:\w+ )?(?:{HEIGHTS}|{VEHICLES})\b")),
        R(_intended(rf"(?:walk|walking|step|stepping|run|running|lie down|lay down|lying down) (?:out )?(?:in front of|into|onto|under)"
                    rf" (?:a |the |an |some |oncoming )?(?:\w+ )?{VEHICLES}\b")),
        R(_intended(r"(?:drive|driving|drove|crash|crashing|swerve|swerving|steer|steering) (?:my car |the car |it |myself |off )?"
                    r"(?:into|off|over|of) (?:a |the |an |some )?(?:\w+ )?(?:tree|wall|cliff|bridge|pole|lake|river|truck|ocean|sea|building"
                    r"|barrier|lamppost|road|overpass|edge|oncoming traffic|traffic)\b")),
        R(r"\b(?:crash|swerve|drive|wreck)\w* (?:\w+ ){0,3}on purpose\b"),
        R(r"\bhow (?:high|tall|far down) (?:the |a |that |this |my )?(?:\w+ )?(?:bridge|building|roof|parking garage|garage|balcony|cliff"
          r"|tower|floor|overpass|drop|fall) (?:is|would be|was)\b|\bhigh enough to (?:die|kill|be fatal|not survive)\b"
          r"|\bwould (?:the fall|it|that) kill me\b"),
    ),
    "means": (
        R(rf"\b(?:took|take|taking|takes|swallow\w*|down\w*|pop\w*|ate|eat|chug\w*)\b(?: \w+){{0,2}}? {LOTS}\b(?: \w+){{0,4}}? {PILLS}\b",
          accident=True),
        R(rf"\b(?:bought|buying|buy|got|getting|stocked up on|stocking up on)\b(?: \w+){{0,2}}? {LOTS}\b(?: \w+){{0,4}}? {PILLS}\b",
          accident=True),
        R(r"\b(?:im|i am|i m|hes|shes|he is|she is) (?:up )?(?:on|at) (?:the )?(?:roof|rooftop|bridge|ledge|edge|railing|top of the \w+)"
          r" (?:right now|now|tonight|alone|again)\b|\b(?:im|i am|i m|hes|shes) (?:up )?(?:on|at) (?:the )?(?:roof|rooftop|bridge|ledge|railing)$",
          accident=True),
        R(rf"\b{PILLS}\b.*\b(?:keep|kept|cant stop|been) (?:thinking|staring|looking)\b"),
        R(r"\blocked (?:my|him|her|them)sel(?:f|ves) in\b.*\b(?:razor|knife|pills|blade|gun|rope|meds)\b"),
        R(rf"\b(?:holding|clutching|gripping)\b(?: \w+){{0,2}}? {PILLS}\b"),
        R(r"\b(?:scared|afraid|worried|terrified) (?:of )?(?:what )?(?:ill|i will|i might|i could|im going to|id) do (?:something|with it|to myself)"
          r"|\b(?:scared|afraid|terrified) (?:of )?what (?:ill|i will|i might|i could|id) do\b"),
        R(r"\bhose\b.*\bexhaust\b|\bexhaust\b.*\bhose\b|\bexhaust fumes\b"),
        R(r"\bgarage\b.*\b(?:car|engine) (?:running|on)\b|\b(?:car|engine) (?:running|on)\b.*\bgarage\b"),
        R(r"\b(?:razors?|razor blades?|blades?|sharps?)\b(?: \w+){0,3}? (?:hidden|hide|stashed|hiding|saved|under my (?:bed|pillow|mattress))\b"
          r"|\bhid\w* (?:my|the) (?:razors?|blades?|razor blades?)\b"),
        R(r"\b(?:tak\w*|took|swallow\w*|down\w*) (?:them|it|those|these|the lot) all\b|\b(?:tak\w*|took|swallow\w*) all of (?:them|those|these)\b"),
        R(r"\b(?:overdos\w*|od|oding|odd on|od on)\b", topic=True),
        R(rf"\b(?:stared|staring|stare|looking|look|looked) at (?:the |my |those |these |all )?(?:\w+ )?{PILLS}\b"),
        R(r"\b(?:noose|tied a knot|tie a knot|the beam in)\b"),
        # The whole sentence is looked at: "a climbing rope", "rope for the boat" are not means.
        R(r"^(?!.*\b(?:climb\w*|gym|boat|camping|tent|tug|swing|hammock|sail\w*|course|horse|lasso|cowboy|jump|skipping|tow\w*"
          r"|dog|leash|knots? class|crafts?|macrame|clothesline|laundry|end of (?:my|the|his|her|their|our) rope)\b).*?\brope\b"),
        R(r"\b(?:gun|pistol|revolver|rifle|shotgun|firearm|glock|barrel)\b(?: \w+){0,6}? (?:to|against|in|into|under) (?:my|his|her|their)"
          r" (?:head|temple|mouth|chin|chest)\b"),
        R(r"\b(?:gun|pistol|revolver|rifle|shotgun|glock)\b(?: \w+){0,3}? (?:is |s |was )?loaded\b|\bloaded (?:gun|pistol|revolver|rifle|shotgun)\b"),
        R(r"\b(?:pull\w* the trigger|blow\w* my brains|eat a bullet|eat my gun|bullet (?:in|into|through) my)\b"),
        R(rf"\b(?:us\w*|turn\w*|point\w*) (?:it|them|that|this|the gun|a gun|his gun|my gun|the knife|a knife|the pills|pills) on {SELF}\b"),
        R(rf"\b(?:stood|standing|stand|sat|sitting|sit|climbed|climbing|went out|go out)\b(?: \w+){{0,2}}? (?:on|at|onto|over|to)"
          rf" (?:the |a )?(?:(?:edge|ledge|railing|rail|top) of (?:the |a |my )?(?:\w+ )?{HEIGHTS}|ledge|railing)\b"),
        R(_intended(rf"(?:jump|jumping|fall|falling|let go)\b(?: (?:off|from) (?:my |the |a )?(?:\w+ )?{HEIGHTS})?(?! (?:in|into|on|at|rope|start|ship|the gun|to conclusions|through)\b)"
                    r"(?=$| (?:off|from|tonight|now|today|again|already)\b)")),
        R(r"\bhow easy it (?:would|could|will|might) be\b(?! to (?!(?:just )?(?:jump|die|end|do it|let go|drive|swerve|step|take|overdose"
          r"|stop|pull|cut|disappear|fall|crash|drown|hang|not|never|give up|go)\b))"),
        R(r"\b(?:razor|blade|knife|scissors|shard|glass)\w*\b(?: \w+){0,4}? (?:against|to|on|across|into|over) (?:my|his|her|their)"
          rf" {BODY}\b"),
        R(r"\b(?:think\w*|thought|looking|staring|stare) (?:about|at) (?:my|cutting my|slitting my|slashing my) wrists?\b"),
    ),
    "self_harm": (
        R(rf"\b(?:hurt\w*|harm\w*|cut\w*|burn\w*|starv\w*|scratch\w*|carv\w*|punish\w*|hit|hitting|punch\w*|bang\w*|bit|bite|biting"
          rf"|injur\w*|mutilat\w*|beat\w*|slap\w*|scald\w*) {SELF}\b", accident=True),
        R(rf"\b(?:slit\w*|slash\w*|cut\w*|open\w*|carv\w*|burn\w*|scratch\w*|scrap\w*|gash\w*|mark\w*|hurt\w*|harm\w*|punish\w*)"
          rf" (?:up |into |in )?{POSSESSIVE} (?:own )?{BODY}\b",
          accident=True),
        R(r"\bself ?(?:harm\w*|injur\w*|mutilat\w*|hurt\w*|destruct\w*)|\bsh (?:again|urges?|scars?|wounds?|cuts?|relapse)\b"
          r"|\b(?:did|do|doing|relapsed? on|urges? to|urge for|clean from|clean of|the urge to|urges for) sh\b", topic=True),
        R(r"\b(?:been|keep|kept|started|start|stop|stopped|quit|relapse\w*|resist\w*|urges? (?:to|of|for)|clean from|clean of|back to"
          r"|want to|wanna|need to|going to|gonna|tempted to) (?:cut|cutting)\b(?! (?:back|down|corners|costs|carbs|sugar|ties|out|off"
          r"|class|classes|school|my hair|the|it|them|him|her|in|through|loose|up|a|an|wood|paper|grass|hair|people|onions"
          r"|vegetables|coupons|meat|gluten|dairy|calories|expenses|spending|hours|my losses|lines?)\b)"),
        R(r"\bcut(?:ting)? (?:again|deeper|tonight|every night|every day|more|harder)\b|\bwhen i cut\b(?! (?:the|my|a|it|some|up|off|out"
          r"|through|down|back|class)\b)"),
        R(rf"\b(?:cuts|scars|wounds|burns|gashes|slashes) (?:on|all over|up and down|along) {POSSESSIVE} {BODY}\b"
          rf"|\b{BODY} (?:are|is) (?:covered in|full of|all) (?:cuts|scars|burns|marks|scratches)\b"
          r"|\bhide (?:my|the|these|those|her|his|all) (?:cuts|scars|marks|burns)\b|\bcovered in (?:cuts|scars)\b"),
        R(r"\bcut (?:so |too |really |very )?deep(?:er|ly)?\b(?! (?:into (?:the|our|their|your) |cuts?\b))|\bdeep cuts? on (?:my|his|her)\b"),
        R(r"\buntil (?:i|it|they|my \w+) (?:bleed|bled|bleeds|bruise\w*|hurts? too much|cant feel)\b|\btill (?:i|it|they) (?:bleed|bruise)\w*"),
        R(r"\b(?:want|need|wanna|deserve) (?:to )?(?:feel|be in) (?:the |some |physical )?pain\b"
          r"|\b(?:i|me) (?:\w+ )?deserve (?:to )?(?:the )?(?:pain|hurt|to be hurt)\b"),
        R(r"\b(?:cutting|self harm\w*|hurting myself|burning myself|sh) (?:is|was) (?:the only|my only|how i)\b"
          r"|\bcope by (?:cutting|hurting|burning|harming)\b"),
        R(r"\b(?:urges?|the urge) (?:to|of|for) (?:cut|cutting|hurt|harm|burn|die|kill|end|jump|sh|bleed|od)\b"),
    ),
    "farewell": (
        R(r"\b(?:goodbye|good bye|farewell|goodby|final|last|suicide) (?:letters?|notes?|messages?|videos?|posts?|texts?|emails?)\b",
          ordinary_farewell=True),
        R(r"\bsuicide notes?\b"),
        R(r"\b(?:wrote|write|writing|written|left|leave|leaving|finished|drafted|drafting)(?: \w+)? (?:letters?|notes?)"
          r" (?:to|for) (?:everyone|everybody|all|my (?:family|mom|mum|dad|parents|kids|children|wife|husband|partner|friends|sister|brother))\b"
          r"|\bleft (?:a |my |the )?(?:note|letter)s?\b(?! (?:for (?:the|a) (?:mailman|postman|neighbou?r|delivery|landlord|teacher|boss)))",
          ordinary_farewell=True),
        R(r"\b(?:note|letter)s? (?:\w+ ){0,5}(?:to find|so (?:they|you|she|he) (?:understand|know|wont))\b"),
        R(r"\b(?:say|said|saying|sayin|says) (?:my |our |his |her |their |a |one last |final |last )?goodbyes?"
          r"(?! to (?:my |our |the |a |his |her |their )?(?:horse|dog|cat|pet|hamster|home|house|apartment|flat|ex|old|childhood"
          r"|summer|city|town|school|job|office|car|bird|fish|rabbit|guinea|puppy|kitten)\b)", ordinary_farewell=True),
        R(r"\b(?:this is|its) (?:goodbye|farewell|the end (?:for me|of me|of the road for me)|my (?:last|final) (?:goodbye|message|post|words|night))\b"
          r"|\b(?:goodbye|bye|farewell) (?:forever|everyone|everybody|world|for good|for ever)\b|\blast goodbye\b"
          r"|\bthis is the end for me\b", ordinary_farewell=True),
        R(r"\b(?:you|u|they|youll|no one|nobody) (?:wont|will not|will never|wont ever|never) (?:hear from|see) me (?:again|anymore|after)\b"
          r"|\bwont be (?:here|around|alive) (?:tomorrow|much longer|for long|anymore|any ?more|by|next|after|to see)\b"
          r"|\bby the time (?:you|u|anyone|someone) (?:read|reads|see|sees|get|gets|find|finds) this\b"),
        R(r"\b(?:when|after|once) (?:im|i am|i m) gone\b(?! (?:on|for|to|away|at|from)\b)"
          r"|\bwhen i (?:wont|will not|will no longer) be (?:here|around)\b"),
        R(r"\b(?:giv\w*|gave) away (?:all |most |some )?(?:of )?(?:my|his|her|their) (?:\w+ )?\w+"
          r"|\b(?:giv\w*|gave) (?:all |most )?(?:of )?(?:my|his|her|their) (?:\w+ )?\w+ away\b", ordinary_farewell=True),
        R(r"\bin case (?:im|i am|i m) (?:not|no longer) (?:there|here|around|alive)\b"),
        R(r"\blast time (?:you|u|anyone|anybody|they) (?:will )?(?:hears?|sees?|talks? to|speaks? to) (?:from )?me\b"),
        R(r"\b(?:want|need) (?:everyone|everybody|you|them|my family|my parents) to know (?:that )?(?:it|this) (?:wasnt|was not|isnt|is not)"
          r" (?:their|your|anyones|her|his)\b|\bat peace with (?:my|this|the) decision\b(?! to)"),
        R(r"\b(?:texted|sent|messaged|posted|wrote|left)(?: \w+){0,2}? (?:a |her |his |their |my )?(?:goodbye|farewell)\b", ordinary_farewell=True),
        R(r"\bthank(?:s| you)(?: \w+){0,4}? (?:and )?(?:goodbye|good bye|farewell)\b", ordinary_farewell=True),
        R(r"\bwho (?:gets|will get|should get|can have|can take|inherits) (?:my|all my|all of my) (?:things|stuff|belongings|possessions|pets?|dog"
          r"|cat|money|room)\b"),
        R(r"\b(?:giv\w*|gave) (?:my|his|her|their) \w+ (?:\w+ )?to \w+ (?:\w+ )?(?:because|since|so|as) (?:i|he|she|they) (?:wont|will not|will never)\b"),
        R(r"\bwont (?:need|be needing) (?:it|them|this|any of it|anything|my \w+) (?:anymore|any ?more|where im going|after)\b"
          r"|\b(?:because|since|as) (?:i|he|she|they) wont (?:need|be needing) (?:it|them|this|any of it)\b"),
        R(r"\b(?:getting|got|put|putting|get|have) (?:all )?(?:my|his|her|their) affairs in order\b"),
        R(r"\btell (?:everyone|everybody|them all|all of them|my (?:family|mom|mum|dad|parents|kids|wife|husband|sister|brother|friends?))"
          r" (?:that )?(?:i|im) (?:love|loved|am sorry|m sorry|sorry)\b"),
        R(r"\b(?:sorry for everything|forgive me)\b(?=.*\b(?:love you all|goodbye|this is the end|last|forever"
          r"|(?:wont|isnt|not|doesnt|stopped) (?:picking up|pick up|answering|answer|responding|respond|replying|reply))\b)"),
        R(r"\blike it was the last time\b|\bfor the last time\b(?= (?:goodbye|bye|i love)\b)"),
    ),
    "slang": (
        R(r"\b(?:kms+|kmsing|k m s|kmsl)\b"),
        R(r"\b(?:i|im|ima|imma|gonna|wanna|should|might|will|ill|just|finna|bout to|about to)\b(?: \w+){0,2}? kys\b"),
        R(r"\bun ?aliv\w*"),
        R(r"\bsewer ?slid\w*|\bself ?delet\w*|\bcommit (?:die|sudoku|toaster bath|neck rope)\b|\bctb\b|\btoaster bath\b"),
        R(r"\b(?:gonna|going to|might|wanna|want to|will|ill|should|just|finna|ima|imma|about to) (?:just )?rope\b"),
        R(rf"\b(?:off|offing) {SELF}\b"),
        R(r"\b(?:done|finished) with (?:life|living|existing|this world|being alive|it all|this life|everything forever)\b"
          r"(?! (?:in|as|at)\b)"),
        R(r"\b(?:wanna|want to|wish i was|wish i were|rather be|better off) (?:be )?(?:ded|dead af|6 feet under|six feet under)\b"),
        R(r"\bk(?:ill|il|ll) m(?:y|i)s(?:elf|lef|ef|elf)\b"),
    ),
}

# -- weak cues: none is a signal alone, two of different kinds in one message or window are --------
# Added after the first look at the frozen held-out set (issue 23): a plan is often said in pieces,
# each harmless ("I have everything I need now." then "I will not be here on Monday."). Read over a
# whole message or a joined window of turns, not one sentence at a time.
WEAK_CUES: dict[str, re.Pattern[str]] = {
    "settled": re.compile(
        r"\b(?:i have|ive got|got) everything i need\b|\b(?:its|it is|thats|everything is|everythings|all) (?:all )?(?:sorted|planned"
        r"|arranged|ready|set|in order|worked out|taken care of)\b|\b(?:ive|i have|i ve) (?:sorted it|made (?:up )?my (?:mind|peace|decision)"
        r"|made sure(?: of it)?|got it all worked out|it all worked out|decided|worked out how|a plan)\b|\bhave it all worked out\b"
        r"|\bthe date is set\b|\bmy mind is made up\b|\b(?:no ?one|nobody)s? (?:is )?talking me out of\b|\bdont try (?:and|to) stop me\b"
        r"|\bgo through with it\b|\bready to go\b|\bfree to go\b|\bit(?:ll| will) be (?:done|over)\b|\bfor good\b"),
    "absent": re.compile(
        r"\b(?:wont|will not|not going to|not gonna|not planning (?:to|on)|dont plan (?:to|on)) (?:be |being )?(?:here|around|alive)\b"
        r"|\bwont (?:need|be needing) (?:it|them|this|that|my|a|the|any)\b|\bnot coming back\b|\bwont be for (?:much|very) long\b"
        r"|\b(?:ill|i will) be (?:gone|dead)\b|\bafter (?:im|i am|i ve|ive) gone\b|\bwhere (?:im|hes|shes) going\b"
        r"|\b(?:last|final) (?:one|week|day|night|shift|time|message|birthday)\b|\bnot (?:be|being) (?:here|around) (?:by|for|much|in)\b"),
    "goodbye": re.compile(
        r"\bthank you for (?:being|always|everything|all)\b|\blook after (?:yourself|mum|mom|dad|my|the|them|him|her)\b"
        r"|\btell (?:mum|mom|dad|my \w+|them|her|him|everyone) (?:im sorry|i love|i loved|that i)\b|\b(?:letters?|notes?|messages?|emails?) (?:for|to)"
        r" (?:mum|mom|dad|my|everyone|them|each|her|him)\b|\bgave (?:away )?(?:my|his|her) \w+ to\b|\bgiven away\b|\bshell understand\b"
        r"|\bdont blame (?:yourselves|yourself)\b|\bsorry (?:ive|i have) been\b"),
    "means": re.compile(
        rf"\b{PILLS}\b|\b(?:rope|noose|blade|razor|rifle|gun|hosepipe|belt over|cliffs?|quarry|railway|platform|tracks|the edge|how high"
        rf"|highest|multistorey|multi story|car park roof|stop a heart|the whole lot|all at once|enough to)\b"),
}


# -- contexts in which a match does not count ------------------------------------------------------
NEGATORS = {"never", "not", "dont", "wont", "wouldnt", "didnt", "isnt", "arent", "aint", "doesnt", "nor", "nt"}
# Words that may sit between a negator and what it negates: "not going to ever", "never even thought of".
NEGATION_FILLER = {
    "i", "im", "am", "really", "actually", "ever", "even", "going", "gonna", "to", "want", "wanna", "wanting", "thinking",
    "think", "thought", "of", "about", "planning", "plan", "on", "be", "being", "feel", "feeling", "do", "anything", "like",
    "that", "try", "trying", "would", "will", "again", "seriously", "honestly", "intend", "intending", "mean", "consider",
    "considering", "have", "had", "any", "plans", "the", "just", "so", "gonna", "ever", "literally", "ive", "been",
}
# A sentence about the topic rather than a person: study, news, fiction, work, awareness.
TOPIC = re.compile(
    r"\b(?:prevention|awareness|rates?|statistics?|stats|hotlines?|helplines?|documentar\w*|articles?|news|essay|paper|thesis|class"
    r"|classes|lecture|research\w*|study|studying|studies|training|assessment|patients?|book|novel|movie|film|show|season|episode"
    r"|character|podcast|barrier|assembly|charity|volunteer\w*|psychology|literature|history of|among|speaker|teens|epidemic"
    r"|opioid|stories|story|plot|scene|chapter|series|anime|song|lyrics|at the end|ends with|ended with|squad|game"
    r"|pharmacist|nurse|er|paramedics?|medic|ems|ambulance|clinic|hospital|ward|poem|poems|poetry|poet)\b"
)
# Words a self-referential report carries, which a topical mention lacks: "now I'm suicidal".
FIRST_PERSON = {"i", "im", "ive", "id", "ill", "am", "feel", "feeling", "felt", "myself", "getting", "so"}
# "Thoughts of suicide have never crossed my mind": a denial after the words it denies.
DENIAL = re.compile(r"\bnever (?:crossed|cross|crosses|entered|enters|occurred) (?:my|his|her|their) mind\b")
# A death reported, not a risk: "my uncle died by suicide", "she took her own life last spring".
LOSS = re.compile(
    r"\b(?:killed|shot|hanged|hung) (?:him|her|them)sel(?:f|ves)\b|\btook (?:his|her|their) own li(?:fe|ves)\b"
    r"|(?<!\bi )(?<!\bi almost )(?<!\bi nearly )\b(?:committed|died by|died of|death by|lost to|lost him to|lost her to|lost them to)"
    r" (?:suicide|an? overdose|overdose)\b|\b(?:died|passed|passed away|death) (?:of|from|after) an? (?:overdose|od)\b"
    r"|\bfatal overdose\b|\b(?:overdosed|oded) (?:last (?:year|month)|\w+ (?:years|months) ago|years ago|in (?:19|20)\d\d)\b"
)
ACCIDENT = re.compile(
    r"\b(?:accident\w*|by mistake|mistakenly|shaving|cooking|chopping|slicing|lifting|gym|practice|playing|skiing|skateboard\w*"
    r"|hiking|running|slipped|tripped|fell|stove|oven|pan|iron|kettle|fence|nail|paper cut|workout|working out|at work|sports?"
    r"|football|soccer|basketball|volleyball|cold medicine|headache|fever|for (?:my |the |a |her |his )?(?:period )?(?:cramps|migraine"
    r"|pain|cold|flu|back|tooth|toothache|allergies|period)|after (?:my |the |a )?(?:surgery|operation)|prescribed|chemo"
    r"|fixing|cleaning|repairing|painting|installing|gutters?)\b"
)
DELIBERATE = re.compile(
    r"\b(?:on purpose|deliberately|intentionally|again|keep|kept|urges?|want|wanna|deserve\w*|punish\w*|relapse\w*|so (?:that )?(?:no ?one"
    r"|nobody)|to feel|until|till)\b"
)
ORDINARY_FAREWELL = re.compile(
    r"\b(?:retir\w*|leaving (?:the|my|our) (?:company|job|team|firm|office|school)|new job|moving(?! on)|move|moved|graduat\w*|trip"
    r"|vacation|holiday|coworkers|colleagues|team|charity|donat\w*|garage sale|declutter\w*|outgrew|outgrown|old|sell|selling|sold"
    r"|abroad|wedding|party|semester|farewell party|for free|see (?:you|ya|yall|u)|be back|back (?:on|in|next|soon)|later|airport"
    r"|station|flight|terminal|cubicle|notice at work|gave (?:my|our) notice|college|university|uni|camp|dorm|boarding|deploy\w*"
    r"|basic training)\b"
)
# Looking back from recovery: "I used to want to die but now I'm doing much better".
RECOVERY = re.compile(
    r"\b(?:old scars|how far (?:ive|i have) come|in recovery|recovered|used to (?:self harm|cut|want to die|be suicidal|hurt myself)"
    r"|(?:doing|feeling) (?:much |so |a lot )?better now)\b"
)
PRESENT = re.compile(r"\b(?:again|relapse\w*|started|lately|these days|still|tonight|back)\b")
# Hyperbole: "if I have to sit through another meeting I'm going to shoot myself lol".
# "I was so embarrassed I wanted to die": a past wish to die about an embarrassing moment is an idiom.
EMBARRASSED = re.compile(r"\b(?:embarrass\w*|mortif\w*|cringe\w*)\b")
HYPERBOLE = re.compile(r"\bif (?:i|we) (?:have to|hear|see|get|must|need to|sit|do|eat|read|watch|listen)\b|\bone more (?:time|minute|meeting|email|word)\b")
LAUGHTER = re.compile(r"\b(?:lol|lmao|lmfao|rofl|ha(?:ha)+|jk|xd)\b|[\U0001F602\U0001F923\U0001F480]")
SERIOUS = re.compile(r"\b(?:but (?:actually|honestly|seriously|really|fr)|not (?:joking|kidding)|no joke|i mean it|fr fr|for real|srsly)\b")

# Texting spellings, written out so that one pattern covers both.
SPELLINGS = {
    "abt": "about", "jus": "just", "cuz": "because", "coz": "because", "bc": "because", "tmrw": "tomorrow", "tmr": "tomorrow",
    "tonite": "tonight", "2nite": "tonight", "2night": "tonight", "ppl": "people", "every1": "everyone", "no1": "no one",
    "some1": "someone", "sum1": "someone", "thinkin": "thinking", "nothin": "nothing", "somethin": "something",
    "goin": "going", "tryin": "trying", "dyin": "dying", "livin": "living", "killin": "killing", "cannot": "cant",
    "nemore": "anymore", "wan": "want", "w": "with", "wit": "with", "bout": "about",
}
# A sentence ends at punctuation followed by a space, so that "d!e" and "k.ill" stay one word.
SENTENCE_END = re.compile(r"[.!?;]+(?:\s+|$)|\n+|\s[-\u2013\u2014]+\s")


def normalize(text: str) -> str:
    """Lower case, apostrophes dropped, letters hidden behind symbols put back ("k*ll", "d!e", "su1cide"),
    texting spellings written out ("abt", "jus"), every other non-alphanumeric run one space, padded
    by spaces."""
    text = re.sub(r"['\u2018\u2019\u02bc`]", "", text.casefold())
    text = re.sub(r"(?<=[a-z])[*!1|](?=[a-z])", "i", text)
    text = re.sub(r"(?<=[a-z])[@4](?=[a-z])", "a", re.sub(r"(?<=[a-z])3(?=[a-z])", "e", re.sub(r"(?<=[a-z])0(?=[a-z])", "o", text)))
    words = re.sub(r"[^0-9a-z]+", " ", text).split()
    return f" {' '.join(SPELLINGS.get(word, word) for word in words)} "


def sentences(text: str) -> list[str]:
    """The sentences of a message, as written (not normalized)."""
    return [part.strip() for part in SENTENCE_END.split(text) if part.strip()]


def _negated(before: str) -> bool:
    """Whether the words right before a match negate it: "I would never", "I'm not going to"."""
    words = before.split()
    for word in reversed(words[-8:]):
        if word in NEGATORS:
            return True
        if word not in NEGATION_FILLER:
            return False
    return False


def _first_person(before: str) -> bool:
    return bool(FIRST_PERSON.intersection(before.split()[-3:]))


@dataclass(frozen=True)
class Hit:
    """Where a message matched: the category, the matched words, and the sentence they are in."""

    category: str
    words: str
    sentence: str


class PatternLayer:
    """The built-in categories plus the user's phrases, matched sentence by sentence."""

    def __init__(self, phrases: Iterable[str] = (), builtin: bool = True) -> None:
        self.phrases = [p for p in (normalize(p).strip() for p in phrases) if p]
        self.rules = [
            (category, re.compile(rule.pattern), rule)
            for category, rules in (CATEGORIES.items() if builtin else ()) for rule in rules
        ]

    def hits(self, text: str) -> Iterable[Hit]:
        normalized = normalize(text)
        for phrase in self.phrases:  # the user's own list is matched as written, with no exceptions
            if f" {phrase}" in normalized:
                yield Hit("user", phrase, text)
        if not self.rules:
            return
        joking = bool(LAUGHTER.search(text.casefold())) and not SERIOUS.search(normalized)
        for raw in sentences(text):
            sentence = normalize(raw).strip()
            if not sentence or DENIAL.search(sentence) or (RECOVERY.search(sentence) and not PRESENT.search(sentence)):
                continue
            masked = LOSS.sub(" ", sentence)
            contexts = {
                "topic": bool(TOPIC.search(sentence)),
                "accident": bool(ACCIDENT.search(sentence)) and not DELIBERATE.search(sentence),
                "ordinary_farewell": bool(ORDINARY_FAREWELL.search(sentence)),
                "hyperbole": joking and bool(HYPERBOLE.search(sentence)),
                "embarrassed": bool(EMBARRASSED.search(sentence)),
            }
            for category, pattern, rule in self.rules:
                for match in pattern.finditer(masked):
                    before = masked[:match.start()]
                    if _negated(before) or contexts["hyperbole"] or (contexts["embarrassed"] and match.group(0).startswith("wanted")):
                        continue
                    if rule.topic and contexts["topic"] and not _first_person(before) and " my" not in f" {match.group(0)}":
                        continue
                    if (rule.accident and contexts["accident"]) or (rule.ordinary_farewell and contexts["ordinary_farewell"]):
                        continue
                    yield Hit(category, match.group(0), sentence)
                    break


class CrisisCheck:
    """Whether a message signals a risk of self-harm or suicide (see the module doc)."""

    def __init__(
        self,
        phrases: Iterable[str] = (),
        message: str = DEFAULT_MESSAGE,
        *,
        builtin: bool = True,
        semantic: Callable[[str], bool] | None = None,
        reply: str | None = DEFAULT_REPLY,
    ) -> None:
        """
        Args:
            phrases: The user's own phrases, matched in addition to the built-in categories.
            message: The line shown after the reply when the check fires.
            builtin: False drops the built-in categories: only `phrases` are matched.
            semantic: A second layer asked only when no pattern matched (e.g. `semantic_layer.SemanticLayer(sentences)`).
            reply: Given instead of the model's reply to a message that signals (checked before any
                generation); None keeps the model's reply, the line still following it.
        """
        self.patterns = PatternLayer(phrases, builtin)
        self.message = message
        self.semantic = semantic
        self.reply = reply
        # A conversation's turns are checked again and again (the window slides; an API client resends
        # its whole history with every request): each text is checked once.
        self._matches = functools.lru_cache(maxsize=4096)(self.signals)

    @property
    def phrases(self) -> list[str]:
        return self.patterns.phrases

    @classmethod
    def from_file(
        cls, path: str | Path, message: str = DEFAULT_MESSAGE, *, builtin: bool = True,
        semantic: Callable[[str], bool] | None = None, reply: str | None = DEFAULT_REPLY,
    ) -> CrisisCheck:
        """The user's phrases from a text file, one per line; blank lines and `#` comments are skipped."""
        try:
            lines = Path(path).read_text(encoding="utf-8").splitlines()
        except (OSError, UnicodeDecodeError) as error:
            raise UserError(f"--crisis_phrases {path} is unreadable ({error})") from None
        check = cls([line.split("#", 1)[0] for line in lines], message, builtin=builtin, semantic=semantic, reply=reply)
        if not check.phrases:
            raise UserError(f"--crisis_phrases {path} holds no phrase (one per line, # starts a comment)")
        return check

    def hits(self, text: str) -> list[Hit]:
        """What the patterns matched, at most one hit per pattern and sentence."""
        return list(self.patterns.hits(text))

    def matches(self, text: str) -> bool:
        """Whether one message signals a risk, read alone (each text checked once, then remembered)."""
        return self._matches(text)

    def signals(self, text: str) -> bool:
        """`matches`, checked afresh every time (for timing it)."""
        if next(iter(self.patterns.hits(text)), None) is not None:
            return True
        if self.patterns.rules and weak_cues(text) >= 2:
            return True
        return self.semantic is not None and self.semantic(text)

    def completes_signal(self, turns: Sequence[str]) -> bool:
        """Whether the newest of the speaker's `turns` (oldest first) shows a signal: read alone, or read
        together with the speaker's turns before it, up to `WINDOW` in all, joined as one text, so that
        a signal split across messages counts ("I have everything I need now." then "I will not be here
        on Monday."; "i just want to" then "die"). A joined window that signalled already without the
        newest turn does not count again: it was the turn before that completed it."""
        recent = [turn.strip() for turn in turns[-WINDOW:]]
        if not recent:
            return False
        if self.matches(recent[-1]):
            return True
        recent = [_edges(turn) for turn in recent]
        return any(
            self.matches(" ".join(recent[start:])) and not self.matches(" ".join(recent[start:-1]))
            for start in range(len(recent) - 1)
        )

    def watch(self) -> CrisisWatch:
        """A fresh conversation's state: the check of each new speaker turn, and whether the line stays."""
        return CrisisWatch(self)

    def layers(self) -> str:
        """Which layers are active, in words, for the one note chat prints."""
        parts = ["built-in patterns"] if self.patterns.rules else []
        parts += ["your phrases"] if self.phrases else []
        parts += ["semantic layer (all-MiniLM-L6-v2)"] if self.semantic is not None else []
        return " + ".join(parts)


def weak_cues(text: str) -> int:
    """How many kinds of `WEAK_CUES` a text holds (its sentences that are negated or look back from recovery aside)."""
    kept = " ".join(
        sentence for sentence in (normalize(raw).strip() for raw in sentences(text))
        if not (RECOVERY.search(sentence) and not PRESENT.search(sentence))
    )
    return sum(bool(cue.search(f" {kept} ")) for cue in WEAK_CUES.values())


def _edges(turn: str) -> str:
    """A long turn's first and last `JOIN_CHARS` characters, for reading it joined with its neighbours:
    a split signal spans the edges of turns, the rest of a turn is read alone, and a pasted page is
    then not read again at every turn of its window (a megabyte takes seconds)."""
    if len(turn) <= 2 * JOIN_CHARS:
        return turn
    return f"{turn[:JOIN_CHARS]} ... {turn[-JOIN_CHARS:]}"


JOIN_CHARS = 1000
# The speaker turns read together. Three: a thought split over two or three chat messages is caught,
# while the harmless turns that follow leave the window after two more turns (the line stays anyway,
# see `CrisisWatch`), and a conversation's unrelated sentences are rarely joined into a false alarm.
WINDOW = 3


@dataclass(frozen=True)
class Verdict:
    """What the check says about the newest speaker turn of a conversation."""

    signal: bool  # the turn shows a signal (alone or completing one): the fixed reply replaces the model's
    notice: bool  # the crisis line is shown: a signal now or at any earlier turn of the conversation


@dataclass
class CrisisWatch:
    """The crisis check of one conversation: its speaker's last `WINDOW` turns and whether any turn so
    far signalled. Once one did, the line stays on every later reply until `reset` (chat's /reset; the
    API builds one per request from the request's user turns, so a new conversation starts fresh)."""

    check: CrisisCheck
    turns: list[str] = field(default_factory=list)
    seen: bool = False

    def hear(self, message: str) -> Verdict:
        """The verdict on `message`, the speaker's newest turn, which it adds to the window."""
        self.turns = [*self.turns, message][-WINDOW:]
        signal = self.check.completes_signal(self.turns)
        self.seen = self.seen or signal
        return Verdict(signal, self.seen)

    def reset(self) -> None:
        self.turns, self.seen = [], False


SEMANTIC_MODES = ("auto", "on", "off")


def build(
    phrases_file: str | Path | None = None, message: str = DEFAULT_MESSAGE, *, phrases_only: bool = False,
    semantic: str = "auto", reply: str = "fixed",
) -> CrisisCheck:
    """The check configured by chat's flags (`--crisis_phrases`, `--crisis_phrases_only`,
    `--crisis_message`, `--crisis_semantic`, `--crisis_reply`): `semantic` "auto" adds the semantic
    layer when the crisis-semantic extra is installed; `phrases_only` matches the user's phrases and
    nothing else; `reply` "fixed" answers a message that signals with `DEFAULT_REPLY`, "model" with
    the model's own reply."""
    if semantic not in SEMANTIC_MODES:
        raise UserError(f"--crisis_semantic {semantic}: expected one of {', '.join(SEMANTIC_MODES)}")
    if reply not in REPLY_MODES:
        raise UserError(f"--crisis_reply {reply}: expected one of {', '.join(REPLY_MODES)}")
    fixed = DEFAULT_REPLY if reply == "fixed" else None
    if phrases_only and phrases_file is None:
        raise UserError("--crisis_phrases_only needs --crisis_phrases FILE")
    from empathic_lora.safety import semantic_layer

    wanted = not phrases_only and (semantic == "on" or (semantic == "auto" and semantic_layer.available()))
    layer = semantic_layer.SemanticLayer(sentences) if wanted else None
    if phrases_file is None:
        return CrisisCheck(message=message, semantic=layer, reply=fixed)
    return CrisisCheck.from_file(phrases_file, message, builtin=not phrases_only, semantic=layer, reply=fixed)


def add_flags(parser: argparse.ArgumentParser) -> None:
    """The crisis flags of `chat.py` and `serve.py`, one definition for both; `from_flags` reads them."""
    crisis = parser.add_argument_group("crisis language (see empathic_lora/safety/crisis_check.py)")
    crisis.add_argument("--crisis_phrases", help="file of phrases that signal a risk of self-harm, one per line "
                        "(added to the built-in patterns)")
    crisis.add_argument("--crisis_phrases_only", action="store_true", help="match only the --crisis_phrases file: "
                        "no built-in patterns, no semantic layer")
    crisis.add_argument("--crisis_semantic", choices=SEMANTIC_MODES, default="auto",
                        help="the semantic layer (auto: when the crisis-semantic extra is installed)")
    crisis.add_argument("--crisis_message", default=DEFAULT_MESSAGE, help="the line shown after the reply when the check fires")
    crisis.add_argument("--crisis_reply", choices=REPLY_MODES, default="fixed",
                        help="the reply to a message that signals a risk: fixed, a short safe-messaging reply checked "
                        "before any generation (no model text is shown); model, the model's own reply (for research)")


def from_flags(args: argparse.Namespace) -> CrisisCheck:
    """The check `add_flags`' flags configure (see `build`); one line on stderr says which layers are on."""
    check = build(args.crisis_phrases, args.crisis_message, phrases_only=args.crisis_phrases_only,
                  semantic=args.crisis_semantic, reply=args.crisis_reply)
    hint = ' (pip install "empathic_lora[crisis-semantic]" adds a semantic layer)' if args.crisis_semantic == "auto" \
        and check.semantic is None and not args.crisis_phrases_only else ""
    print(f"crisis check: {check.layers()}{hint}", file=sys.stderr, flush=True)
    return check
