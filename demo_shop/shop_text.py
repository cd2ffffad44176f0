"""The demo shop's review and inquiry text: as hard to read as a real shop's, in English and Chinese.

A fixed sentence per star level and topic would let any text model score 1.000 on the demo. Here each text
is put together from many templates and slot fillers, so the same meaning comes in many wordings, and the
shop's roughness is planted at counted rates (`REVIEW_RATES`, `INQUIRY_RATES`):
- reviews of mixed tone ("love the colour but the seams came apart"), 3-star reviews that weigh a good
  point against a bad one, reviews whose words disagree with their stars, off-topic and very short reviews
  ("ok", "好", "."), empty titles;
- inquiries about two topics, inquiries that name none of the keywords of `conf/triage.yaml` (and subjects
  that name the wrong one), vague inquiries ("any news?");
- typos: swapped or dropped letters (Chinese: dropped or doubled characters) at a small rate.

Randomness comes from one `random.Random` per block, seeded from the block's own `numpy.random.SeedSequence`
(spawn key (3, block)), so the text changes no other row of the shop. The true topic of an inquiry is drawn
by the shop generator; the text only expresses it.
"""

from __future__ import annotations

import random
import re

import numpy as np

RATING_LEVELS = ("negative", "neutral", "positive")  # ratings 1-2, 3, 4-5
TOPICS = ("shipping", "return_refund", "product_question", "payment", "complaint")

#: Shares of reviews (fractions) with each kind of text. `opposite_tone`: the words say the opposite of
#: the stars (a 1-star "love it", a slip of the finger); `neighbour_tone`: one level off (a 5-star review
#: that reads lukewarm); `mixed`: a positive or negative review with one point of the other tone.
REVIEW_RATES = {
    "very_short": 0.05,
    "off_topic": 0.03,
    "opposite_tone": 0.03,
    "neighbour_tone": 0.07,
    "mixed": 0.30,
    "empty_title": 0.35,
    "typo_per_word": 0.025,
    "typo_per_character_zh": 0.01,
}
#: Shares of inquiries (fractions). `filed`: of the resolved inquiries, those support filed under a topic
#: (the shop's `inquiries.topic`; the others are null); `misfiled`: of those, filed under a wrong topic.
#: `second_topic`: a sentence about another topic follows; `vague`: the
#: text says nothing of the topic; `generic_subject`: a subject that names no topic (or the wrong one).
INQUIRY_RATES = {
    "filed": 0.6,
    "misfiled": 0.04,
    "second_topic": 0.25,
    "vague": 0.08,
    "generic_subject": 0.35,
    "typo_per_word": 0.02,
    "typo_per_character_zh": 0.01,
}

# ---------------------------------------------------------------------------------------------------------
# Review text: aspect phrases by tone, with slots {good}, {bad}, {time}, {item}
# ---------------------------------------------------------------------------------------------------------

_EN_FILL = {
    "good": ("great", "excellent", "really good", "superb", "lovely", "solid", "very nice"),
    "bad": ("poor", "awful", "disappointing", "not good", "terrible", "cheap-looking", "a letdown"),
    "time": ("a week", "two days", "one wash", "a month", "the first use", "three weeks"),
    "item": ("it", "the item", "this", "mine", "the product", "the one I got"),
}
_ZH_FILL = {
    "good": ("很好", "非常好", "不错", "挺好", "超级好", "很棒"),
    "bad": ("很差", "太差了", "不怎么样", "一般般", "很失望", "很糟糕"),
    "time": ("一周", "两天", "洗了一次", "一个月", "第一次用", "三个星期"),
    "item": ("东西", "这个", "宝贝", "商品", "收到的这件"),
}
REVIEW_PHRASES: dict[str, dict[str, dict[str, tuple[str, ...]]]] = {
    "en": {
        "quality": {
            "positive": (
                "the quality is {good}",
                "{item} feels really solid",
                "well made, the stitching is neat",
                "sturdier than it looks",
                "still like new after {time}",
                "the material is {good}",
            ),
            "negative": (
                "the seams came apart after {time}",
                "{item} broke after {time}",
                "feels cheap and flimsy",
                "the quality is {bad}",
                "the stitching is already coming loose",
                "started falling apart within {time}",
            ),
        },
        "look": {
            "positive": (
                "love the colour",
                "looks even better than in the photos",
                "the design is {good}",
                "the colour is exactly as shown",
                "very stylish",
            ),
            "negative": (
                "the colour is nothing like the pictures",
                "looks much duller in real life",
                "the print faded after {time}",
                "the design is {bad}",
            ),
        },
        "delivery": {
            "positive": (
                "arrived quickly and well packed",
                "came a day early",
                "shipping was fast",
                "the parcel turned up in two days",
                "delivery was {good}",
            ),
            "negative": (
                "took {time} to arrive",
                "the box was crushed when it came",
                "delivery was {bad}",
                "the parcel was late",
                "came much later than promised",
            ),
        },
        "price": {
            "positive": (
                "great value for the price",
                "cheaper than elsewhere",
                "worth every penny",
                "a bargain",
                "good price for what you get",
            ),
            "negative": (
                "overpriced for what it is",
                "not worth the money",
                "way too expensive",
                "you can get the same for half the price",
                "the price is {bad}",
            ),
        },
        "service": {
            "positive": (
                "customer service was friendly",
                "support sorted it out within minutes",
                "the seller answered all my questions",
                "service was {good}",
            ),
            "negative": ("support never replied", "the seller was rude", "customer service was {bad}", "nobody answered my emails"),
        },
        "size_fit": {
            "positive": (
                "fits perfectly",
                "true to size",
                "the fit is spot on",
                "comfortable from day one",
                "the sizing chart was accurate",
            ),
            "negative": (
                "runs two sizes small",
                "way too tight",
                "the fit is {bad}",
                "the sleeves are far too long",
                "does not fit at all",
            ),
        },
    },
    "zh": {
        "quality": {
            "positive": ("质量{good}", "{item}做工很扎实", "走线很整齐", "比看起来结实", "用了{time}还跟新的一样", "材质{good}"),
            "negative": ("{time}就开线了", "{item}用了{time}就坏了", "感觉很廉价", "质量{bad}", "线头很多", "{time}就开始掉色"),
        },
        "look": {
            "positive": ("颜色很喜欢", "比图片还好看", "款式{good}", "颜色和图片一样", "很有气质"),
            "negative": ("颜色和图片完全不一样", "实物很暗淡", "图案{time}就褪了", "款式{bad}"),
        },
        "delivery": {
            "positive": ("发货很快，包装严实", "提前一天就到了", "物流很给力", "两天就收到了", "快递{good}"),
            "negative": ("等了{time}才到", "盒子压扁了", "快递{bad}", "到得太晚了", "比说好的慢很多"),
        },
        "price": {
            "positive": ("性价比很高", "比别家便宜", "物超所值", "很划算", "这个价格很值"),
            "negative": ("太贵了", "不值这个价", "价格虚高", "别家一半的价钱", "价格{bad}"),
        },
        "service": {
            "positive": ("客服很热情", "客服几分钟就解决了", "卖家耐心回答问题", "服务{good}"),
            "negative": ("客服一直不回", "卖家态度很差", "服务{bad}", "发消息没人理"),
        },
        "size_fit": {
            "positive": ("尺码很准", "穿着很合身", "版型很正", "上身很舒服", "按尺码表买的刚好"),
            "negative": ("偏小两个码", "太紧了", "版型{bad}", "袖子太长了", "完全穿不了"),
        },
    },
}
_FIT_ASPECT = "size_fit"

REVIEW_OPENERS = {
    "en": {
        "positive": ("Really happy with this.", "Love it!", "Exactly what I was looking for.", "Very pleased.", "Second one I bought."),
        "neutral": ("Hmm.", "Mixed feelings.", "It's okay.", "Not sure what to think.", "So-so."),
        "negative": ("Not happy.", "Regret this one.", "What a waste.", "Do not buy.", "Sent a message to the seller."),
    },
    "zh": {
        "positive": ("很满意。", "太喜欢了！", "就是想要的那种。", "非常开心。", "回购第二次了。"),
        "neutral": ("嗯。", "心情复杂。", "还行吧。", "说不上来。", "一般。"),
        "negative": ("不满意。", "后悔买了。", "白花钱。", "别买。", "已经联系卖家了。"),
    },
}
REVIEW_CLOSERS = {
    "en": {
        "positive": ("Would buy again.", "Recommended.", "Five stars.", "Already told my friends.", "Happy customer."),
        "neutral": ("Okay for the price, I guess.", "Might keep it.", "Not sure I'd buy again.", "Three stars.", "It does the job."),
        "negative": ("Returning it.", "Avoid.", "Never again.", "One star.", "Want my money back."),
    },
    "zh": {
        "positive": ("会回购的。", "推荐购买。", "五星好评。", "已经推荐给朋友了。", "满意。"),
        "neutral": ("这个价格也就这样吧。", "先留着用。", "不一定回购。", "三星吧。", "凑合能用。"),
        "negative": ("已申请退货。", "大家避雷。", "不会再买了。", "一星。", "要求退款。"),
    },
}
REVIEW_TITLES = {
    "en": {
        "positive": ("Love it", "Great buy", "Recommended", "Very happy", "Excellent", "Nice"),
        "neutral": ("Okay", "Average", "Mixed", "Fine I guess", "Hmm", "Could be better"),
        "negative": ("Disappointed", "Not worth it", "Poor", "Avoid", "Bad", "Returned"),
    },
    "zh": {
        "positive": ("喜欢", "买对了", "推荐", "很满意", "好评", "不错"),
        "neutral": ("还行", "一般", "有好有坏", "凑合", "中评", "可以更好"),
        "negative": ("失望", "不值", "差评", "避雷", "很差", "退货了"),
    },
}
#: Very short reviews: some say their tone, some say nothing ("ok", ".").
VERY_SHORT = {
    "en": {
        "positive": ("good", "great!", "love it", "ok", "nice", "A+", "."),
        "neutral": ("ok", "meh", "fine", "average", ".", "it's ok"),
        "negative": ("bad", "no", "ok", "broken", "meh", ".", "nope"),
    },
    "zh": {
        "positive": ("好", "不错", "好评", "喜欢", "可以", "。"),
        "neutral": ("还行", "一般", "好", "可以", "。", "凑合"),
        "negative": ("差", "不好", "一般", "坏了", "好", "。"),
    },
}
#: Reviews about something else than the product: no tone in the words whatever the stars.
OFF_TOPIC = {
    "en": (
        "Bought this as a gift for my sister.",
        "Ordered it on Monday with two other things.",
        "My second order from this shop.",
        "Writing this for the reward points.",
        "Haven't opened it yet, will update.",
        "Got the blue one.",
    ),
    "zh": (
        "给妹妹买的礼物。",
        "周一下单，和别的一起买的。",
        "第二次在这家店买东西。",
        "为了积分来评价的。",
        "还没拆开，用了再来追评。",
        "买的蓝色。",
    ),
}
_CONTRAST = {
    "en": (" but ", ", though ", ", however ", ". Only thing: ", ". That said, "),
    "zh": ("，但是", "，不过", "，可惜", "。就是", "。唯一的问题是"),
}
_AND = {"en": (", and ", ". Also ", ", ", " and "), "zh": ("，而且", "，", "。另外", "，还有")}

# ---------------------------------------------------------------------------------------------------------
# Inquiry text: bodies with and without the triage keywords; {order} names the order
# ---------------------------------------------------------------------------------------------------------

INQUIRY_TEXT: dict[str, dict[str, dict[str, tuple[str, ...]]]] = {
    "en": {
        "shipping": {
            "subjects": ("Where is my order?", "Delivery delayed", "Tracking not updating", "Still waiting", "Nothing yet"),
            "bodies": (
                '"{item}" from {order} was due {days} ago.',
                "Is there any way to get {order} before the weekend?",
                "My neighbour might have taken in {order}, can you check who signed?",
                "Hi, {order} still has not arrived. Could you check where it is?",
                "The tracking for {order} has not changed for days. When will it come?",
                "Can I still change the delivery address for {order}?",
                "It's been ten days and nothing has turned up at my door for {order}.",
                "The courier says delivered but there is nothing here. {order}.",
                "When will {order} leave your warehouse? Still says processing.",
                "I'm moving next week, can {order} go to my new flat instead?",
            ),
            "tails": ("Also, when will the rest of {order} come?", "And the tracking link does not work.", "PS nothing has arrived yet."),
        },
        "return_refund": {
            "subjects": ("Return request", "Refund not received", "Wrong item received", "Sending something back", "Money back?"),
            "bodies": (
                "The {item} in {order} is too small, how can I get a different one?",
                "Still no money on my card for the {item} I sent back {days} ago.",
                "The {item} from {order} stopped working, I'd like my money back.",
                "I would like to return an item from {order}. How do I send it back?",
                "I returned {order} two weeks ago but my refund has not come through.",
                "I received the wrong item in {order}. Please arrange an exchange.",
                "The jacket from {order} doesn't suit me, can I get my money back?",
                "You sent me a blue one instead of black in {order}.",
                "Posted {order} back to you last Monday, has it reached you?",
                "Can I swap {order} for a bigger one?",
            ),
            "tails": (
                "Also I'd like to send one item back.",
                "And when do I get the money back for the other one?",
                "I also want a refund for the second item.",
            ),
        },
        "product_question": {
            "subjects": ("Question about a product", "Is this item in stock?", "Size advice", "Before I buy", "Quick question"),
            "bodies": (
                "Does the {item} come with batteries?",
                "What are the measurements of the {item}?",
                "Is the {item} suitable for a child of 8?",
                "Hello, does this product come in other colours?",
                "When will this item be back in stock?",
                "Which size would you recommend for a regular fit?",
                "Is the lamp's cable long enough for a 3 m room?",
                "Is the bag waterproof? Thinking of ordering one.",
                "How long is the warranty on the kettle?",
                "Can this be washed at 60 degrees?",
            ),
            "tails": ("Also, is the grey one coming back?", "And do you have it in a larger size?", "Also, what is it made of?"),
        },
        "payment": {
            "subjects": ("Payment failed", "Charged twice", "Coupon code not accepted", "Problem at checkout", "Bank statement"),
            "bodies": (
                "The app says my card was declined but the money left my account {days} ago.",
                "Can I pay for {order} in instalments?",
                "Why does {order} show a different total than the basket?",
                "My payment keeps failing at checkout. What should I do?",
                "I was charged twice for {order}. Please refund the extra payment.",
                "My coupon code was not accepted. Can you apply the discount?",
                "My bank shows two debits for {order}.",
                "I need a VAT receipt for {order} for my company.",
                "The 10% off from your email didn't apply to {order}.",
                "Can I settle {order} by bank transfer instead?",
            ),
            "tails": ("Also I was charged twice.", "And the coupon did not work either.", "Also I need an invoice for it."),
        },
        "complaint": {
            "subjects": ("Very unhappy with my order", "Complaint about your service", "Unacceptable", "Not good enough", "Really?"),
            "bodies": (
                "Your courier threw the parcel over the fence and the {item} is broken. Unbelievable.",
                "{days} of excuses about {order}. I've had enough.",
                "The {item} in {order} smelled of smoke. Who checks these things?",
                "I am very unhappy with {order}. The item is damaged and nobody answers me.",
                "This is the third time I contact you about {order}. I expect a solution today.",
                "Your service has been terrible. I want to speak to a manager about {order}.",
                "I've been a customer for years and {order} is the worst experience so far.",
                "Nobody has replied for a week about {order}. This is not how you treat people.",
                "The man on the phone hung up on me when I asked about {order}.",
                "I will tell everyone I know to stay away from your shop after {order}.",
            ),
            "tails": ("Honestly I'm fed up.", "This is ridiculous.", "Very disappointed with all of this."),
        },
    },
    "zh": {
        "shipping": {
            "subjects": ("我的订单到哪里了？", "物流延迟", "物流信息不更新", "还没收到", "一直在等"),
            "bodies": (
                "{order}的{item}{days}前就该到了。",
                "{order}周末前能到吗？",
                "{order}可能被邻居代收了，能查下谁签的吗？",
                "你好，{order}还没有送到，麻烦查一下到哪里了。",
                "{order}的物流好几天没更新了，什么时候能送到？",
                "{order}还能修改收货地址吗？",
                "{order}等了十天了还没看到东西。",
                "显示已签收，但我根本没拿到，{order}。",
                "{order}什么时候从仓库出来？一直显示处理中。",
                "下周搬家，{order}能寄到新地址吗？",
            ),
            "tails": ("另外{order}剩下的什么时候到？", "还有物流链接打不开。", "顺便问下东西还没到。"),
        },
        "return_refund": {
            "subjects": ("申请退货", "退款还没收到", "发错货了", "想寄回去", "钱什么时候退？"),
            "bodies": (
                "{order}的{item}太小了，能换一个吗？",
                "{item}{days}前寄回去了，钱还没回到卡里。",
                "{order}的{item}坏了，想把钱要回来。",
                "我想退{order}里的一件商品，怎么寄回？",
                "{order}两周前就退回了，退款还没到账。",
                "{order}发错货了，请帮忙换货。",
                "{order}的外套不合适，钱能退给我吗？",
                "{order}要的是黑色，寄来的是蓝色。",
                "上周一把{order}寄回给你们了，收到了吗？",
                "{order}能换大一号吗？",
            ),
            "tails": ("另外我想退掉一件。", "还有另一件的钱什么时候退？", "第二件我也想退款。"),
        },
        "product_question": {
            "subjects": ("商品咨询", "这个商品有货吗？", "尺码咨询", "买之前问一下", "请问"),
            "bodies": (
                "{item}带电池吗？",
                "{item}的具体大小是多少？",
                "{item}适合八岁小孩用吗？",
                "你好，这个商品还有别的颜色吗？",
                "这个商品什么时候补货？",
                "平时穿M码，这款建议买哪个尺码？",
                "这个台灯的线有多长？房间三米。",
                "这个包防水吗？想买一个。",
                "水壶保修多久？",
                "这个能用60度水洗吗？",
            ),
            "tails": ("另外灰色的还会上吗？", "还有大一号的吗？", "另外是什么做的？"),
        },
        "payment": {
            "subjects": ("支付失败", "重复扣款", "优惠券无法使用", "结账有问题", "银行账单"),
            "bodies": (
                "App说卡被拒了，但钱{days}前已经扣了。",
                "{order}可以分期吗？",
                "为什么{order}的金额和购物车里的不一样？",
                "结账时一直支付失败，怎么办？",
                "{order}被扣了两次款，请退还多扣的钱。",
                "我的优惠券用不了，能帮忙处理一下吗？",
                "银行显示{order}扣了两笔。",
                "{order}需要开公司抬头的票。",
                "邮件里的九折没有用在{order}上。",
                "{order}能用银行转账吗？",
            ),
            "tails": ("另外我被扣了两次钱。", "还有优惠券也没用上。", "另外需要开发票。"),
        },
        "complaint": {
            "subjects": ("对订单非常不满", "投诉服务", "太过分了", "太让人生气了", "说法？"),
            "bodies": (
                "快递员把包裹扔进院子，{item}摔坏了，简直不敢相信。",
                "{order}的事推了{days}，受够了。",
                "{order}的{item}一股烟味，你们都不检查的吗？",
                "对{order}非常不满意，商品坏了也没人回复。",
                "这是我第三次联系你们关于{order}的问题了，今天必须解决。",
                "你们的服务太差了，我要投诉{order}。",
                "老顾客了，{order}是最糟糕的一次。",
                "{order}的问题一个星期没人理，有这样对待顾客的吗？",
                "问{order}的事，电话那边直接挂了。",
                "{order}之后我会让朋友都别在你们家买。",
            ),
            "tails": ("真的受够了。", "太离谱了。", "非常失望。"),
        },
    },
}
_INQUIRY_FILL = {
    "en": {
        "item": ("lamp", "jacket", "kettle", "backpack", "phone case", "shoes", "mug set", "blanket"),
        "days": ("three days", "a week", "two weeks", "ten days", "a month"),
    },
    "zh": {"item": ("台灯", "外套", "水壶", "背包", "手机壳", "鞋子", "杯子", "毯子"), "days": ("三天", "一周", "两周", "十天", "一个月")},
}
GREETINGS = {
    "en": ("", "", "Hi, ", "Hello, ", "Dear support, ", "Hi there! ", "Good morning, "),
    "zh": ("", "", "你好，", "您好，", "亲，", "客服你好，", "在吗？"),
}
SIGN_OFFS = {
    "en": ("", "", " Thanks.", " Thank you!", " Regards, Anna", " Cheers", " Sent from my phone"),
    "zh": ("", "", "谢谢。", "谢谢！", "辛苦了。", "麻烦了。"),
}
#: Subjects that name no topic, or lead the keywords astray ("咨询", "Question about" are product words).
GENERIC_SUBJECTS = {
    "en": ("Help", "Hello", "{order}", "Re: your message", "", "Question about my order", "Hi", "Urgent"),
    "zh": ("你好", "在吗", "{order}", "回复：你的消息", "", "咨询一下订单", "求助", "紧急"),
}
VAGUE_BODIES = {
    "en": (
        "Hi, any news?",
        "Please call me back.",
        "Hello?",
        "Can someone help me with {order}?",
        "See attached.",
        "Same problem as before.",
    ),
    "zh": ("你好，在吗？", "麻烦回个电话。", "有人吗？", "{order}有点问题，帮帮忙。", "见附件。", "还是之前那个问题。"),
}

_WORD = re.compile(r"[A-Za-z]{4,}")


def _fill(template: str, fill: dict[str, tuple[str, ...]], draw: random.Random) -> str:
    return re.sub(r"\{(good|bad|time|item)\}", lambda m: draw.choice(fill[m.group(1)]), template)


def _sentence(text: str, lang: str, draw: random.Random) -> str:
    if lang == "zh":
        return text + draw.choice(("。", "。", "！", "，"))
    return text[:1].upper() + text[1:] + draw.choice((".", ".", "!", ""))


def with_typos(text: str, lang: str, per_word: float, per_character_zh: float, draw: random.Random) -> str:
    """`text` with typos: in Latin words of 4+ letters, two neighbouring letters swapped or one dropped (each
    word with probability `per_word`); in Chinese, a character dropped or doubled (`per_character_zh`)."""
    if lang == "zh":
        out = []
        for char in text:
            if "\u4e00" <= char <= "\u9fff" and draw.random() < per_character_zh:
                out.append("" if draw.random() < 0.5 else char + char)
            else:
                out.append(char)
        return "".join(out)

    def typo(match: re.Match) -> str:
        word = match.group(0)
        if draw.random() >= per_word:
            return word
        k = draw.randrange(1, len(word) - 1)
        return word[:k] + word[k + 1] + word[k] + word[k + 2 :] if draw.random() < 0.5 else word[:k] + word[k + 1 :]

    return _WORD.sub(typo, text)


def text_stream(seed: int, block: int) -> random.Random:
    """The text's random stream of one block of customers: independent of every other draw of the shop."""
    state = np.random.SeedSequence(seed, spawn_key=(3, block)).generate_state(2)
    return random.Random(int(state[0]) << 32 | int(state[1]))


def review_tone(rating_level: int, draw: random.Random) -> int:
    """The tone the words take (index into RATING_LEVELS): mostly the stars' level, sometimes one level off
    or the opposite (`REVIEW_RATES`)."""
    u = draw.random()
    if u < REVIEW_RATES["opposite_tone"]:
        return 2 - rating_level if rating_level != 1 else draw.choice((0, 2))
    if u < REVIEW_RATES["opposite_tone"] + REVIEW_RATES["neighbour_tone"]:
        return 1 if rating_level != 1 else draw.choice((0, 2))
    return rating_level


def review_text(rating_level: int, lang: str, fits: bool, draw: random.Random) -> tuple[str, str]:
    """Title and body of one review whose stars are at `rating_level` (0 negative, 1 neutral, 2 positive)."""
    tone = RATING_LEVELS[review_tone(rating_level, draw)]
    titles = REVIEW_TITLES[lang][tone]
    title = "" if draw.random() < REVIEW_RATES["empty_title"] else draw.choice(titles)
    u = draw.random()
    if u < REVIEW_RATES["very_short"]:
        return title, draw.choice(VERY_SHORT[lang][tone])
    if u < REVIEW_RATES["very_short"] + REVIEW_RATES["off_topic"]:
        return title, draw.choice(OFF_TOPIC[lang])
    fill = _ZH_FILL if lang == "zh" else _EN_FILL
    phrases = REVIEW_PHRASES[lang]
    aspects = [aspect for aspect in phrases if fits or aspect != _FIT_ASPECT]
    first, second = draw.sample(aspects, 2)

    def phrase(aspect: str, polarity: str) -> str:
        return _fill(draw.choice(phrases[aspect][polarity]), fill, draw)

    if tone == "neutral":
        good, bad = phrase(first, "positive"), phrase(second, "negative")
        pair = (good, bad) if draw.random() < 0.5 else (bad, good)
        core = pair[0] + draw.choice(_CONTRAST[lang]) + pair[1]
    else:
        core = phrase(first, tone)
        if draw.random() < 0.4:
            core += draw.choice(_AND[lang]) + phrase(second, tone)
        if draw.random() < REVIEW_RATES["mixed"]:
            other = "negative" if tone == "positive" else "positive"
            core += draw.choice(_CONTRAST[lang]) + phrase(draw.choice(aspects), other)
    parts = [_sentence(core, lang, draw)]
    if draw.random() < 0.5:
        parts.insert(0, draw.choice(REVIEW_OPENERS[lang][tone]))
    if draw.random() < 0.5:
        parts.append(draw.choice(REVIEW_CLOSERS[lang][tone]))
    body = ("" if lang == "zh" else " ").join(parts)
    return title, with_typos(body, lang, REVIEW_RATES["typo_per_word"], REVIEW_RATES["typo_per_character_zh"], draw)


def inquiry_text(topic: int, lang: str, reference: str, draw: random.Random) -> tuple[str, str]:
    """Subject and body of one inquiry about TOPICS[topic]; `reference` names its order ("order #12")."""
    texts = INQUIRY_TEXT[lang][TOPICS[topic]]
    subject = draw.choice(GENERIC_SUBJECTS[lang] if draw.random() < INQUIRY_RATES["generic_subject"] else texts["subjects"])
    if draw.random() < INQUIRY_RATES["vague"]:
        body = draw.choice(VAGUE_BODIES[lang])
    else:
        body = draw.choice(GREETINGS[lang]) + draw.choice(texts["bodies"])
        if draw.random() < INQUIRY_RATES["second_topic"]:
            other = TOPICS[(topic + draw.randrange(1, len(TOPICS))) % len(TOPICS)]
            body += ("" if lang == "zh" else " ") + draw.choice(INQUIRY_TEXT[lang][other]["tails"])
    fill = {name: draw.choice(values) for name, values in _INQUIRY_FILL[lang].items()}
    body = with_typos(
        (body + draw.choice(SIGN_OFFS[lang])).format(order=reference, **fill),
        lang,
        INQUIRY_RATES["typo_per_word"],
        INQUIRY_RATES["typo_per_character_zh"],
        draw,
    )
    return subject.format(order=reference), body


def filed_topic(topic: int, is_resolved: bool, draw: random.Random) -> str | None:
    """The topic support filed an inquiry under (the shop's `inquiries.topic`): for a share of the resolved
    ones, mostly the true topic, sometimes a wrong one; None for the rest (`INQUIRY_RATES`)."""
    if not is_resolved or draw.random() >= INQUIRY_RATES["filed"]:
        return None
    if draw.random() < INQUIRY_RATES["misfiled"]:
        return TOPICS[(topic + draw.randrange(1, len(TOPICS))) % len(TOPICS)]
    return TOPICS[topic]
