{#- Every validation rule (seed validation_rules) evaluated per org unit and period where any
    of its operands has a value, as DHIS2 validation analysis does: each side is the sum of
    its operands' values (over attribute option combos and sources), a side without values
    counts as 0, and the rule's missing_value_strategy skips the evaluation when all
    (SKIP_IF_ALL_VALUES_MISSING) or any (SKIP_IF_ANY_VALUE_MISSING) operand values are
    missing. compulsory_pair: both sides present or both absent; exclusive_pair: not both. -#}
{{ config(materialized='table') }}

with rules as (

    select * from {{ ref('validation_rules') }}

),

operands as (

    select * from {{ ref('int_validation_rule_operands') }}

),

operand_counts as (

    select rule_id, count(*) as operand_count
    from operands
    group by rule_id

),

operand_values as (

    select
        o.rule_id,
        o.side,
        o.term,
        v.org_unit_id,
        v.period_id,
        v.period_type,
        sum(v.value) as value
    from operands as o
    join {{ ref('int_data_quality_values') }} as v
        on v.data_element_id = o.data_element_id
        and (o.category_option_combo_id is null
             or v.category_option_combo_id = o.category_option_combo_id)
    group by o.rule_id, o.side, o.term, v.org_unit_id, v.period_id, v.period_type

),

sides as (

    select
        rule_id,
        org_unit_id,
        period_id,
        period_type,
        sum(case when side = 'left' then value end) as left_value,
        sum(case when side = 'right' then value end) as right_value,
        count(*) as operands_present
    from operand_values
    group by rule_id, org_unit_id, period_id, period_type

),

evaluated as (

    select
        r.rule_id,
        r.name as rule_name,
        r.importance,
        s.org_unit_id,
        s.period_id,
        s.period_type,
        r.left_side,
        r.operator,
        r.right_side,
        coalesce(s.left_value, 0) as left_value,
        coalesce(s.right_value, 0) as right_value,
        s.left_value is not null as has_left_value,
        s.right_value is not null as has_right_value
    from sides as s
    join rules as r on r.rule_id = s.rule_id
    join operand_counts as c on c.rule_id = s.rule_id
    where r.missing_value_strategy <> 'SKIP_IF_ANY_VALUE_MISSING'
       or s.operands_present = c.operand_count

)

select
    *,
    not (case operator
        when '==' then left_value = right_value
        when '!=' then left_value <> right_value
        when '>' then left_value > right_value
        when '>=' then left_value >= right_value
        when '<' then left_value < right_value
        when '<=' then left_value <= right_value
        when 'compulsory_pair' then has_left_value = has_right_value
        when 'exclusive_pair' then not (has_left_value and has_right_value)
    end) as is_violation
from evaluated
