{#- The operands of each side of each validation rule (seed validation_rules): a side is a
    DHIS2 expression summing operands, "#{de}" (every category option combo) or "#{de.coc}".
    The singular test assert_validation_rule_sides_are_sums checks every side has that form. -#}
with sides as (

    select rule_id, 'left' as side, left_side as expression from {{ ref('validation_rules') }}
    union all
    select rule_id, 'right' as side, right_side as expression from {{ ref('validation_rules') }}

),

split as (

    select
        rule_id,
        side,
        expression,
        {{ hp_split_to_rows('expression', '+') }} as raw_term
    from sides

),

terms as (

    select rule_id, side, expression, trim(raw_term) as term
    from split

),

operands as (

    select
        rule_id,
        side,
        expression,
        term,
        replace(replace(term, '#{', ''), '}', '') as operand
    from terms

)

select
    rule_id,
    side,
    expression,
    term,
    split_part(operand, '.', 1) as data_element_id,
    case when split_part(operand, '.', 2) not in ('', '*') then split_part(operand, '.', 2) end
        as category_option_combo_id
from operands
