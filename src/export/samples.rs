//! Built-in sample texts for the build's checks: short and long, positive, negative and mixed,
//! with HTML breaks, punctuation runs and non-ASCII, like real reviews.

/// The sample texts.
pub const TEXTS: &[&str] = &[
    "This movie was absolutely wonderful, I loved every minute of it!",
    "Worst film I've seen in years. <br /><br />Total waste of time.",
    "The plot was okay but the acting... not so much.",
    "A quiet, patient drama that rewards attention. The lead performance is extraordinary.",
    "I wanted to like it. I really did. But two hours of this was too much.",
    "Not bad at all, better than I expected from the trailer.",
    "Terrible script, wooden acting, and the ending makes no sense whatsoever.",
    "Café crème brûlée — naïve façade, but a charming little film nonetheless.",
    "10/10 would watch again!!! 😀",
    "Boring. Boring. Boring.",
    "The cinematography is stunning and the score is haunting; a masterpiece of the genre.",
    "It's the kind of movie you forget as soon as the credits roll.",
    "My kids loved it, I fell asleep halfway through.",
    "An insult to the original novel. The director clearly never read it.",
    "Funny, warm and surprisingly moving. Go see it.",
    "I can't recommend this to anyone; even the special effects look cheap.",
    "Started slow but the last act is fantastic and totally worth the wait. The cast has real \
     chemistry, the dialogue is sharp, and the final twist landed for me even though I saw part \
     of it coming. <br /><br />Some scenes drag, and the subplot with the brother goes nowhere, \
     but overall this is one of the better thrillers of the year and I will happily watch it again.",
    "What a mess. The editing is choppy, the sound mix buries half the lines, and the story \
     jumps between timelines without any sense of purpose. <br />I kept waiting for it to come \
     together and it never did. The actors try their best with what they were given, which is \
     not much. Two stars for the costumes.",
    "Meh.",
    "A triumph.",
    "UPPER CASE SHOUTING IS STILL NEGATIVE? NO, IT IS GREAT.",
    "don't won't can't it's we're they'll I'd — still a decent watch.",
    "The first half is brilliant, the second half is a disaster.",
    "Beautifully shot, poorly written, forgettable.",
];
